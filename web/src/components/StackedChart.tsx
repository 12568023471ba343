import { useEffect, useRef, useState } from 'preact/hooks';
import { niceCeil } from '../format';

export interface Series {
  key: string;
  label: string;
  /** A CSS class giving the fill colour (see styles.css: .op-…). */
  className: string;
  values: bigint[];
}

interface Props {
  /** One label per bar (e.g. the day of the month). */
  labels: string[];
  /** A fuller name per bar for tooltips (e.g. "5 Dec"). */
  names: string[];
  series: Series[];
  format: (v: bigint) => string;
  /** The chart in words, for screen readers (the table beside it has the figures). */
  ariaLabel: string;
  xTitle: string;
}

const H = 300;
const LEFT = 84;
const RIGHT = 12;
const TOP = 14;
const BOTTOM = 46;
const PLOT_H = H - TOP - BOTTOM;
/** Narrower than this, the chart scrolls sideways rather than squeezing its bars. */
const MIN_W = 440;

/** The axis's ticks: 0 … top in steps that divide `top` exactly. */
function ticks(top: bigint): bigint[] {
  const n = top % 4n === 0n ? 4n : top % 5n === 0n ? 5n : top % 2n === 0n ? 2n : 1n;
  const out: bigint[] = [];
  for (let i = 0n; i <= n; i++) out.push((top * i) / n);
  return out;
}

/** The height of a value, in SVG units (geometry, not figures: the exact values are in the table). */
function scale(v: bigint, top: bigint): number {
  return Number((v * BigInt(PLOT_H * 100)) / top) / 100;
}

/** A stacked bar chart drawn by hand in SVG: one bar per label, one segment per series. */
export function StackedChart({ labels, names, series, format, ariaLabel, xTitle }: Props) {
  // Drawn at the width it is shown at (one SVG unit = one CSS pixel), so text keeps its size.
  const box = useRef<HTMLDivElement>(null);
  const [W, setW] = useState(720);
  useEffect(() => {
    const el = box.current;
    if (!el || typeof ResizeObserver === 'undefined') return undefined;
    const observer = new ResizeObserver(() => {
      const width = Math.max(MIN_W, Math.floor(el.clientWidth));
      setW((w) => (w === width ? w : width));
    });
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  const PLOT_W = W - LEFT - RIGHT;
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] ?? 0n), 0n));
  const max = totals.reduce((m, t) => (t > m ? t : m), 0n);
  const top = niceCeil(max);
  const slot = PLOT_W / Math.max(labels.length, 1);
  const barW = Math.max(2, Math.min(28, slot * 0.7));
  const every = Math.max(1, Math.ceil(18 / slot));
  return (
    <div class="chart-size" ref={box}>
      <svg class="chart" width={W} height={H} viewBox={`0 0 ${W} ${H}`} role="img" aria-label={ariaLabel}>
        <g class="chart-grid">
          {ticks(top).map((t) => {
            const y = TOP + PLOT_H - scale(t, top);
            return (
              <g key={t.toString()}>
                <line x1={LEFT} x2={W - RIGHT} y1={y} y2={y} />
                <text x={LEFT - 8} y={y + 4} text-anchor="end">
                  {format(t)}
                </text>
              </g>
            );
          })}
        </g>
        <g class="chart-bars">
          {labels.map((label, i) => {
            const x = LEFT + slot * i + (slot - barW) / 2;
            let acc = 0n;
            const tip = [`${names[i]}: ${format(totals[i]!)}`]
              .concat(series.filter((s) => (s.values[i] ?? 0n) > 0n).map((s) => `${s.label} ${format(s.values[i]!)}`))
              .join('\n');
            return (
              <g key={label + i}>
                <title>{tip}</title>
                {/* A full-height hit area so the tooltip shows on empty days too. */}
                <rect class="chart-hit" x={LEFT + slot * i} y={TOP} width={slot} height={PLOT_H} />
                {series.map((s) => {
                  const v = s.values[i] ?? 0n;
                  if (v <= 0n) return null;
                  const y0 = scale(acc, top);
                  acc += v;
                  const y1 = scale(acc, top);
                  return <rect key={s.key} class={s.className} x={x} width={barW} y={TOP + PLOT_H - y1} height={Math.max(y1 - y0, 0.5)} />;
                })}
                {i % every === 0 && (
                  <text class="chart-x" x={x + barW / 2} y={TOP + PLOT_H + 16} text-anchor="middle">
                    {label}
                  </text>
                )}
              </g>
            );
          })}
        </g>
        <line class="chart-axis" x1={LEFT} x2={W - RIGHT} y1={TOP + PLOT_H} y2={TOP + PLOT_H} />
        <text class="chart-title" x={LEFT + PLOT_W / 2} y={H - 6} text-anchor="middle">
          {xTitle}
        </text>
      </svg>
    </div>
  );
}
