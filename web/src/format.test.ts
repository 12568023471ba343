import { describe, expect, it } from 'vitest';
import { parseJson } from './api';
import {
  basisPoints, basisPointsDecimal, daysBetween, formatBasisPoints, formatBytesExact, formatCents, formatDollarString, formatDuration,
  formatGB, formatInt, formatPer, formatUtc, historyRange, maxBasisPoints, niceCeil, periodDays, periodLabel, shortDay,
} from './format';
import { overagePrice } from './pricing';

describe('integers and money', () => {
  it('groups thousands', () => {
    expect(formatInt(0n)).toBe('0');
    expect(formatInt(999n)).toBe('999');
    expect(formatInt(1000n)).toBe('1,000');
    expect(formatInt(240000n)).toBe('240,000');
    expect(formatInt(-1234567n)).toBe('-1,234,567');
    expect(formatInt(9007199254740993n)).toBe('9,007,199,254,740,993');
  });

  it('formats cents as dollars without floats', () => {
    expect(formatCents(0n)).toBe('$0.00');
    expect(formatCents(5n)).toBe('$0.05');
    expect(formatCents(50000n)).toBe('$500.00');
    expect(formatCents(1234567n)).toBe('$12,345.67');
    expect(formatCents(-5n)).toBe('-$0.05');
    expect(formatCents(-1234567n)).toBe('-$12,345.67');
    expect(formatCents(900719925474099312n)).toBe('$9,007,199,254,740,993.12');
  });

  it('formats dollar strings from the price list', () => {
    expect(formatDollarString('2.00')).toBe('$2.00');
    expect(formatDollarString('1000.5')).toBe('$1,000.50');
    expect(formatDollarString('3')).toBe('$3.00');
  });
});

describe('bytes', () => {
  it('shows decimal GB truncated to hundredths', () => {
    expect(formatGB(0n)).toBe('0.00 GB');
    expect(formatGB(1_200_000_000n)).toBe('1.20 GB');
    expect(formatGB(1_239_999_999n)).toBe('1.23 GB');
    expect(formatGB(9_999_999n)).toBe('0.00 GB');
    expect(formatGB(25_000_000_000n)).toBe('25.00 GB');
    expect(formatGB(1_234_000_000_000n)).toBe('1,234.00 GB');
    expect(formatBytesExact(1_200_000_000n)).toBe('1,200,000,000 bytes');
  });
});

describe('percentages', () => {
  it('computes basis points rounded down', () => {
    expect(basisPoints(240000n, 250000n)).toBe(9600n);
    expect(basisPoints(1n, 3n)).toBe(3333n);
    expect(basisPoints(5n, 0n)).toBeNull();
    expect(formatBasisPoints(9600n)).toBe('96.00%');
    expect(formatBasisPoints(480n)).toBe('4.80%');
    expect(formatBasisPoints(123456n)).toBe('1,234.56%');
    expect(formatBasisPoints(null)).toBe('—');
    expect(basisPointsDecimal(123456n)).toBe('1234.56');
    expect(maxBasisPoints(9600n, 480n)).toBe(9600n);
    expect(maxBasisPoints(null, 480n)).toBe(480n);
  });
});

describe('periods and instants', () => {
  it('names periods and their days', () => {
    expect(periodLabel('2026-12')).toBe('December 2026');
    expect(periodDays('2026-02')).toEqual(['2026-02-01', '2026-02-28']);
    expect(periodDays('2028-02')).toEqual(['2028-02-01', '2028-02-29']);
    expect(periodDays('2026-12')).toEqual(['2026-12-01', '2026-12-31']);
  });

  it('asks for the current period up to today and earlier ones whole', () => {
    const now = new Date('2026-12-10T12:00:00Z');
    expect(historyRange('2026-12', now)).toEqual(['2026-12-01', '2026-12-10']);
    expect(historyRange('2026-11', now)).toEqual(['2026-11-01', '2026-11-30']);
    expect(daysBetween('2026-12-30', '2027-01-02')).toEqual(['2026-12-30', '2026-12-31', '2027-01-01', '2027-01-02']);
    expect(shortDay('2026-12-05')).toBe('5 Dec');
  });

  it('writes instants in UTC', () => {
    expect(formatUtc(new Date('2026-12-01T00:00:00Z'))).toBe('1 Dec 2026 00:00 UTC');
    expect(formatUtc(new Date('2027-01-01T00:00:00Z'))).toBe('1 Jan 2027 00:00 UTC');
  });

  it('writes durations', () => {
    expect(formatDuration(20 * 86_400_000 + 11 * 3_600_000 + 5 * 60_000)).toBe('20 days 11 hours');
    expect(formatDuration(3 * 3_600_000 + 5 * 60_000)).toBe('3 hours 5 minutes');
    expect(formatDuration(86_400_000)).toBe('1 day');
    expect(formatDuration(30_000)).toBe('under a minute');
    expect(formatDuration(-1)).toBe('none');
  });
});

describe('axis', () => {
  it('rounds up to 1, 2 or 5 times a power of ten', () => {
    expect(niceCeil(0n)).toBe(1n);
    expect(niceCeil(7n)).toBe(10n);
    expect(niceCeil(10n)).toBe(10n);
    expect(niceCeil(12_000n)).toBe(20_000n);
    expect(niceCeil(240_001n)).toBe(500_000n);
    expect(niceCeil(1_200_000_000n)).toBe(2_000_000_000n);
  });
});

describe('prices', () => {
  it('describes bands', () => {
    expect(formatPer('traces', 1000n)).toBe('per 1,000 traces');
    expect(formatPer('payload_bytes', 1_000_000_000n)).toBe('per GB');
    const band = (price: string, per: bigint, up_to: bigint | null) => ({ from: 0n, up_to, unit_amount_decimal: '0', price, per });
    expect(overagePrice('traces', { included: 100000n, bands: [band('2.00', 1000n, null)] })).toBe('$2.00 per 1,000 traces');
    expect(
      overagePrice('traces', {
        included: 2_500_000n,
        bands: [band('1.20', 1000n, 5_000_000n), band('1.00', 1000n, 10_000_000n), band('0.80', 1000n, null)],
      }),
    ).toBe('$1.20 per 1,000 traces up to 5,000,000 traces, $1.00 per 1,000 traces up to 10,000,000 traces, then $0.80 per 1,000 traces');
  });
});

describe('parseJson', () => {
  // JSON.parse source text access: Chromium and Node ≥ 21; Node 20 takes the fallback.
  let hasSource = false;
  JSON.parse('1', (_k, v, ...rest: unknown[]) => {
    hasSource = (rest[0] as { source?: string } | undefined)?.source !== undefined;
    return v;
  });

  it('turns integers into BigInt and keeps other numbers', () => {
    const v = parseJson('{"a": 240000, "b": 96.5, "c": [1, -2], "d": "3", "e": null}') as Record<string, unknown>;
    expect(v.a).toBe(240000n);
    expect(v.b).toBe(96.5);
    expect(v.c).toEqual([1n, -2n]);
    expect(v.d).toBe('3');
    expect(v.e).toBeNull();
  });

  it.runIf(hasSource)('reads integers beyond 2^53 exactly from their source text', () => {
    const v = parseJson('{"a": 9007199254740993, "b": 96.0, "f": 1e3}') as Record<string, unknown>;
    expect(v.a).toBe(9007199254740993n);
    expect(v.b).toBe(96);
    expect(v.f).toBe(1000);
  });

  it.runIf(!hasSource)('refuses integers beyond 2^53 without source text access', () => {
    expect(() => parseJson('{"a": 9007199254740993}')).toThrow(/cannot read large figures/);
  });
});
