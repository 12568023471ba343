//! `replay` reads only the partition an org's records are in. It computes that partition with
//! Tally's own murmur2 (`tally_schemas::partition_for_key`); here it is checked against the
//! partitioner the producers actually use, librdkafka's `murmur2_random` for a non-empty key.

use proptest::prelude::*;
use tally_schemas::partition_for_key;

fn librdkafka(key: &[u8], partitions: i32) -> i32 {
    // SAFETY: librdkafka's murmur2 partitioner reads `key` and uses no topic state.
    unsafe {
        rdkafka::bindings::rd_kafka_msg_partitioner_murmur2(
            std::ptr::null(),
            key.as_ptr().cast(),
            key.len(),
            partitions,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

#[test]
fn org_ids_land_where_librdkafka_puts_them() {
    for org in
        ["acme", "globex", "initech", "umbrella", "hooli", "org00042", "a", "ab", "abc", "abcd"]
    {
        for n in [1, 2, 3, 8, 12, 64] {
            assert_eq!(
                partition_for_key(org.as_bytes(), n),
                librdkafka(org.as_bytes(), n),
                "{org} of {n}"
            );
        }
    }
}

proptest! {
    #[test]
    fn any_key_lands_where_librdkafka_puts_it(key in proptest::collection::vec(any::<u8>(), 1..80), n in 1i32..256) {
        prop_assert_eq!(partition_for_key(&key, n), librdkafka(&key, n));
    }
}
