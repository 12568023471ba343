import { basisPoints, basisPointsDecimal, formatBasisPoints, formatBytesExact, formatGB, formatInt, type Metric } from '../format';
import { Bytes, Int } from './Figures';

/**
 * Usage of one metric against the tier's included amount: a progress bar (drawn in SVG, so no
 * inline style is needed) and the exact figures, tagged for tests.
 */
export function UsageBar({ metric, used, included }: { metric: Metric; used: bigint; included: bigint }) {
  const id = `usage-${metric}`;
  const bp = basisPoints(used, included);
  const level = bp === null ? 'ok' : bp >= 10_000n ? 'exceeded' : bp >= 9_000n ? 'approaching' : 'ok';
  // The bar is 1000 units wide; beyond 100% it is full.
  const fill = bp === null ? 0 : Number(bp >= 10_000n ? 1000n : bp / 10n);
  const now = bp === null ? '0' : basisPointsDecimal(bp);
  const max = bp !== null && bp > 10_000n ? now : '100';
  const title = metric === 'traces' ? 'Traces' : 'Payload';
  const usedText = metric === 'traces' ? `${formatInt(used)} of ${formatInt(included)} traces` : `${formatGB(used)} of ${formatGB(included)}`;
  return (
    <div class={`usage usage-${level}`}>
      <div class="usage-head">
        <h3 id={`${id}-label`}>{title}</h3>
        <span class="usage-pct">{formatBasisPoints(bp)}</span>
      </div>
      <div
        class="bar"
        role="progressbar"
        aria-labelledby={`${id}-label`}
        aria-valuemin={0}
        aria-valuemax={Number(max)}
        aria-valuenow={Number(now)}
        aria-valuetext={`${formatBasisPoints(bp)} of the included amount: ${usedText}`}
      >
        <svg viewBox="0 0 1000 16" preserveAspectRatio="none" aria-hidden="true" focusable="false">
          <rect class="bar-track" x="0" y="0" width="1000" height="16" rx="4" />
          <rect class="bar-fill" x="0" y="0" width={fill} height="16" rx="4" />
          <line class="bar-mark" x1="900" x2="900" y1="0" y2="16" vector-effect="non-scaling-stroke" />
        </svg>
      </div>
      <p class="usage-figures">
        {metric === 'traces' ? (
          <>
            <Int value={used} name="traces" /> of <Int value={included} name="included_traces" /> included traces
          </>
        ) : (
          <>
            <Bytes value={used} name="payload_bytes" /> of <Bytes value={included} name="included_payload_bytes" /> included
            <span class="exact">
              {' '}
              ({formatBytesExact(used)} of {formatBytesExact(included)})
            </span>
          </>
        )}
        {bp !== null && used > included && (
          <>
            {' · '}
            <strong>{metric === 'traces' ? `${formatInt(used - included)} traces` : formatGB(used - included)} over</strong>
          </>
        )}
      </p>
    </div>
  );
}
