// Pure formatting: money, counts, bytes, percentages, periods and instants.
//
// Money and usage are BigInt all the way: no figure shown here ever passes through a float.
// Instants use Date (integer milliseconds); they are never money.

const GB = 1_000_000_000n;

/** 240000n → "240,000"; -1234n → "-1,234". */
export function formatInt(n: bigint): string {
  const negative = n < 0n;
  const digits = (negative ? -n : n).toString();
  return (negative ? '-' : '') + groupDigits(digits);
}

/** "1234567" → "1,234,567" (digits only). */
function groupDigits(digits: string): string {
  let out = '';
  for (let i = 0; i < digits.length; i++) {
    if (i > 0 && (digits.length - i) % 3 === 0) out += ',';
    out += digits[i];
  }
  return out;
}

/** Whole cents as US dollars: 1234567n → "$12,345.67"; -5n → "-$0.05". */
export function formatCents(cents: bigint): string {
  const negative = cents < 0n;
  const abs = negative ? -cents : cents;
  const dollars = abs / 100n;
  const rest = (abs % 100n).toString().padStart(2, '0');
  return `${negative ? '-' : ''}$${groupDigits(dollars.toString())}.${rest}`;
}

/** A dollar amount written as a decimal string ("2.00", "1000.5") as "$2.00", "$1,000.50". */
export function formatDollarString(price: string): string {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(price.trim());
  if (!m) return price;
  const frac = (m[3] ?? '').padEnd(2, '0');
  return `${m[1]}$${groupDigits(m[2]!)}.${frac}`;
}

/**
 * Bytes as decimal gigabytes (10^9), two places, truncated: 1_234_999_999n → "1.23 GB".
 * Exact byte counts go beside it with {@link formatBytesExact}.
 */
export function formatGB(bytes: bigint): string {
  const negative = bytes < 0n;
  const abs = negative ? -bytes : bytes;
  const whole = abs / GB;
  const hundredths = ((abs % GB) / 10_000_000n).toString().padStart(2, '0');
  return `${negative ? '-' : ''}${groupDigits(whole.toString())}.${hundredths} GB`;
}

/** 1200000000n → "1,200,000,000 bytes". */
export function formatBytesExact(bytes: bigint): string {
  return `${formatInt(bytes)} ${bytes === 1n ? 'byte' : 'bytes'}`;
}

/** used / included in basis points (hundredths of a percent), rounded down; null when nothing is included. */
export function basisPoints(used: bigint, included: bigint): bigint | null {
  if (included <= 0n) return null;
  return (used * 10_000n) / included;
}

/** 9600n → "96.00%"; 123456n → "1,234.56%"; null → "—". */
export function formatBasisPoints(bp: bigint | null): string {
  if (bp === null) return '—';
  const negative = bp < 0n;
  const abs = negative ? -bp : bp;
  return `${negative ? '-' : ''}${groupDigits((abs / 100n).toString())}.${(abs % 100n).toString().padStart(2, '0')}%`;
}

/** 9600n → "96.00", without separators (for aria-valuenow and the like). */
export function basisPointsDecimal(bp: bigint): string {
  const negative = bp < 0n;
  const abs = negative ? -bp : bp;
  return `${negative ? '-' : ''}${abs / 100n}.${(abs % 100n).toString().padStart(2, '0')}`;
}

/** The larger of two optional basis-point figures. */
export function maxBasisPoints(a: bigint | null, b: bigint | null): bigint | null {
  if (a === null) return b;
  if (b === null) return a;
  return a > b ? a : b;
}

export type Metric = 'traces' | 'payload_bytes';

/** A quantity of a metric in words: "240,000 traces", "1.20 GB". */
export function formatQuantity(metric: Metric | null, quantity: bigint): string {
  if (metric === 'payload_bytes') return formatGB(quantity);
  if (metric === 'traces') return `${formatInt(quantity)} ${quantity === 1n ? 'trace' : 'traces'}`;
  return formatInt(quantity);
}

/** A band's unit in words: traces per 1,000 → "per 1,000 traces"; bytes per 10^9 → "per GB". */
export function formatPer(metric: Metric, per: bigint): string {
  if (metric === 'payload_bytes') {
    if (per === GB) return 'per GB';
    if (per > 0n && per % GB === 0n) return `per ${formatInt(per / GB)} GB`;
    return `per ${formatInt(per)} bytes`;
  }
  return per === 1n ? 'per trace' : `per ${formatInt(per)} traces`;
}

/** A metric's name for people. */
export function metricName(metric: string): string {
  if (metric === 'traces') return 'Traces';
  if (metric === 'payload_bytes') return 'Payload';
  return metric;
}

/** "llm_call" → "LLM call"; other snake_case names → "Tool call". */
export function operationName(op: string): string {
  if (op === 'llm_call') return 'LLM call';
  const words = op.replace(/_/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** "starter" → "Starter". */
export function tierName(tier: string): string {
  return tier.charAt(0).toUpperCase() + tier.slice(1);
}

// ---- periods and instants -----------------------------------------------------------------

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const MONTHS_SHORT = MONTHS.map((m) => m.slice(0, 3));

/** "2026-12" → { year: 2026, month: 12 }, or null. */
export function parsePeriod(period: string): { year: number; month: number } | null {
  const m = /^(\d{4})-(\d{2})$/.exec(period);
  if (!m) return null;
  const year = Number(m[1]);
  const month = Number(m[2]);
  if (month < 1 || month > 12) return null;
  return { year, month };
}

/** "2026-12" → "December 2026". */
export function periodLabel(period: string): string {
  const p = parsePeriod(period);
  return p ? `${MONTHS[p.month - 1]} ${p.year}` : period;
}

/** The first and last day of a period, as YYYY-MM-DD: "2026-02" → ["2026-02-01", "2026-02-28"]. */
export function periodDays(period: string): [string, string] {
  const p = parsePeriod(period);
  if (!p) throw new Error(`not a period: ${period}`);
  const last = new Date(Date.UTC(p.year, p.month, 0)).getUTCDate();
  const mm = String(p.month).padStart(2, '0');
  return [`${p.year}-${mm}-01`, `${p.year}-${mm}-${String(last).padStart(2, '0')}`];
}

/** The UTC day of an instant as YYYY-MM-DD. */
export function utcDay(at: Date): string {
  return at.toISOString().slice(0, 10);
}

/** The period (YYYY-MM) that contains an instant, in UTC. */
export function periodOf(at: Date): string {
  return at.toISOString().slice(0, 7);
}

/** The day range the daily history asks for: the whole period, or up to today (UTC) for the current one. */
export function historyRange(period: string, now: Date): [string, string] {
  const [from, last] = periodDays(period);
  const today = utcDay(now);
  if (today < from) return [from, from];
  return [from, today < last ? today : last];
}

/** Every day from `from` to `to` (YYYY-MM-DD, inclusive). */
export function daysBetween(from: string, to: string): string[] {
  const out: string[] = [];
  const end = Date.parse(`${to}T00:00:00Z`);
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= end && out.length < 400; t += 86_400_000) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

/** "2026-12-05" → "5 Dec". */
export function shortDay(day: string): string {
  const m = /^\d{4}-(\d{2})-(\d{2})$/.exec(day);
  if (!m) return day;
  return `${Number(m[2])} ${MONTHS_SHORT[Number(m[1]) - 1]}`;
}

/** An instant in UTC: "1 Dec 2026 00:00 UTC". */
export function formatUtc(at: Date): string {
  if (Number.isNaN(at.getTime())) return '—';
  const hh = String(at.getUTCHours()).padStart(2, '0');
  const mm = String(at.getUTCMinutes()).padStart(2, '0');
  return `${at.getUTCDate()} ${MONTHS_SHORT[at.getUTCMonth()]} ${at.getUTCFullYear()} ${hh}:${mm} UTC`;
}

/** An instant in the viewer's time zone (or `timeZone`), with the zone's name. */
export function formatLocal(at: Date, timeZone?: string, locale?: string): string {
  if (Number.isNaN(at.getTime())) return '—';
  return new Intl.DateTimeFormat(locale, {
    day: 'numeric',
    month: 'short',
    year: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    timeZoneName: 'short',
    timeZone,
  }).format(at);
}

/** The viewer's time zone name, e.g. "Europe/Paris". */
export function localTimeZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
}

/** A duration in words, two units at most: "20 days 11 hours", "3 hours 5 minutes", "under a minute". */
export function formatDuration(ms: number): string {
  if (ms <= 0) return 'none';
  const minutes = Math.floor(ms / 60_000);
  const days = Math.floor(minutes / 1440);
  const hours = Math.floor((minutes % 1440) / 60);
  const mins = minutes % 60;
  const unit = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  if (days > 0) return hours > 0 ? `${unit(days, 'day')} ${unit(hours, 'hour')}` : unit(days, 'day');
  if (hours > 0) return mins > 0 ? `${unit(hours, 'hour')} ${unit(mins, 'minute')}` : unit(hours, 'hour');
  if (mins > 0) return unit(mins, 'minute');
  return 'under a minute';
}

/**
 * The smallest "round" number (1, 2 or 5 × 10^k) at or above `n`, for a chart's axis.
 * 0n → 1n; 7n → 10n; 12_000n → 20_000n; 240_001n → 500_000n.
 */
export function niceCeil(n: bigint): bigint {
  if (n <= 1n) return 1n;
  let scale = 1n;
  while (scale * 10n < n) scale *= 10n;
  for (const step of [1n, 2n, 5n, 10n]) {
    if (step * scale >= n) return step * scale;
  }
  return 10n * scale;
}
