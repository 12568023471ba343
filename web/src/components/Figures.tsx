import { formatBytesExact, formatCents, formatGB, formatInt } from '../format';

/** The attributes that let tests find a key figure: data-tally="NAME" data-value="RAW". */
export function tally(name: string, value: bigint | string): { 'data-tally': string; 'data-value': string } {
  return { 'data-tally': name, 'data-value': value.toString() };
}

/** Cents as dollars, optionally tagged as a key figure. */
export function Money({ cents, name }: { cents: bigint; name?: string }) {
  return (
    <span class="num" {...(name ? tally(name, cents) : {})}>
      {formatCents(cents)}
    </span>
  );
}

export function Int({ value, name }: { value: bigint; name?: string }) {
  return (
    <span class="num" {...(name ? tally(name, value) : {})}>
      {formatInt(value)}
    </span>
  );
}

/** Bytes as GB with the exact byte count in a tooltip (and, with `exact`, beside it). */
export function Bytes({ value, name, exact }: { value: bigint; name?: string; exact?: boolean }) {
  return (
    <span class="num" title={formatBytesExact(value)} {...(name ? tally(name, value) : {})}>
      {formatGB(value)}
      {exact && <span class="exact"> ({formatBytesExact(value)})</span>}
    </span>
  );
}
