import { useMemo, useState } from 'preact/hooks';
import { dailyPath, getDaily } from '../api';
import { tally } from '../components/Figures';
import { ScrollTable } from '../components/ScrollTable';
import { type Series, StackedChart } from '../components/StackedChart';
import { Loaded } from '../components/Status';
import {
  daysBetween, formatBytesExact, periodDays, formatGB, formatInt, historyRange, type Metric, operationName, periodLabel, shortDay,
} from '../format';
import { useResource } from '../hooks';
import { OPERATIONS, type Daily } from '../types';
import { PeriodSelect } from '../components/PeriodSelect';

interface Props {
  orgId: string;
  /** Periods to choose from, newest first; the first is the current one. */
  periods: string[];
  current: string;
}

export function History({ orgId, periods, current }: Props) {
  const [period, setPeriod] = useState(current);
  const [metric, setMetric] = useState<Metric>('traces');
  const [from, to] = historyRange(period, new Date());
  const daily = useResource((signal) => getDaily(orgId, from, to, signal), [orgId, from, to]);
  const choices = periods.includes(period) ? periods : [period, ...periods];
  return (
    <section id="history" class="section" aria-labelledby="history-h">
      <h2 id="history-h">History</h2>
      <div class="controls">
        <PeriodSelect id="history-period" value={period} choices={choices} current={current} onChange={setPeriod} />
        <fieldset class="field radios">
          <legend>Show</legend>
          <label>
            <input type="radio" name="history-metric" value="traces" checked={metric === 'traces'} onChange={() => setMetric('traces')} />
            Traces
          </label>
          <label>
            <input
              type="radio"
              name="history-metric"
              value="payload_bytes"
              checked={metric === 'payload_bytes'}
              onChange={() => setMetric('payload_bytes')}
            />
            Payload bytes
          </label>
        </fieldset>
        <a class="button secondary" href={dailyPath(orgId, from, to, 'csv')} download={`tally-${orgId}-${from}-${to}.csv`}>
          Download CSV
        </a>
      </div>
      <Loaded resource={daily} what="the daily history">
        {(d) => <HistoryView daily={d} metric={metric} period={period} />}
      </Loaded>
    </section>
  );
}

const OP_CLASS: Record<string, string> = Object.fromEntries(OPERATIONS.map((op, i) => [op, `op op-${i + 1}`]));

function HistoryView({ daily, metric, period }: { daily: Daily; metric: Metric; period: string }) {
  const { days, ops, cell, dayTotals, opTotals, total } = useMemo(() => {
    const days = daysBetween(daily.from, daily.to);
    const seen = new Set<string>(OPERATIONS);
    for (const r of daily.days) seen.add(r.operation);
    const ops = [...seen];
    const index = new Map<string, bigint>();
    for (const r of daily.days) {
      const k = `${r.day}|${r.operation}`;
      index.set(k, (index.get(k) ?? 0n) + r[metric]);
    }
    const cell = (day: string, op: string) => index.get(`${day}|${op}`) ?? 0n;
    const dayTotals = days.map((d) => ops.reduce((s, op) => s + cell(d, op), 0n));
    const opTotals = ops.map((op) => days.reduce((s, d) => s + cell(d, op), 0n));
    const total = dayTotals.reduce((s, v) => s + v, 0n);
    return { days, ops, cell, dayTotals, opTotals, total };
  }, [daily, metric]);

  const fmt = metric === 'traces' ? formatInt : formatGB;
  const unit = metric === 'traces' ? 'traces' : 'payload';
  // The chart spans the whole period (days still to come stay empty); the table lists the days asked for.
  const [first, last] = periodDays(period);
  const chartDays = daysBetween(first < daily.from ? first : daily.from, last > daily.to ? last : daily.to);
  const series: Series[] = ops.map((op) => ({
    key: op,
    label: operationName(op),
    className: OP_CLASS[op] ?? 'op op-other',
    values: chartDays.map((d) => cell(d, op)),
  }));
  let peak = 0;
  dayTotals.forEach((v, i) => {
    if (v > dayTotals[peak]!) peak = i;
  });
  const summary =
    `Daily ${unit} by operation, ${shortDay(daily.from)} to ${shortDay(daily.to)}: ${fmt(total)} in all` +
    (total > 0n ? `; the busiest day was ${shortDay(days[peak]!)} with ${fmt(dayTotals[peak]!)}.` : '.') +
    ' The table below has every figure.';
  const label = `${metric === 'traces' ? 'Traces' : 'Payload bytes'} per day and operation, ${periodLabel(period)}`;
  return (
    <div class="history">
      <div class="chart-box">
        <ScrollTable label="Daily chart (scrolls sideways on small screens)">
          <StackedChart
            labels={chartDays.map((d) => String(Number(d.slice(8))))}
            names={chartDays.map(shortDay)}
            series={series}
            format={fmt}
            ariaLabel={summary}
            xTitle={`Day of ${periodLabel(period)} (UTC)`}
          />
        </ScrollTable>
        <ul class="legend" aria-label="Operations">
          {series.map((s) => (
            <li key={s.key}>
              <svg viewBox="0 0 12 12" aria-hidden="true" focusable="false">
                <rect class={s.className} width="12" height="12" rx="2" />
              </svg>
              {s.label}
            </li>
          ))}
        </ul>
      </div>
      <h3 id="history-table-h">{label}</h3>
      {metric === 'payload_bytes' && <p class="muted">In GB (10^9 bytes), rounded down; hover a figure for its exact bytes.</p>}
      <ScrollTable label={label}>
        <table class="daily">
          <thead>
            <tr>
              <th scope="col">Day</th>
              {ops.map((op) => (
                <th scope="col" class="r" key={op}>
                  {operationName(op)}
                </th>
              ))}
              <th scope="col" class="r">
                Total
              </th>
            </tr>
          </thead>
          <tbody>
            {days.map((d, i) => (
              <tr key={d}>
                <th scope="row">
                  <time dateTime={d}>{shortDay(d)}</time>
                </th>
                {ops.map((op) => {
                  const v = cell(d, op);
                  return (
                    <td class="r num" key={op} title={metric === 'payload_bytes' ? formatBytesExact(v) : undefined}>
                      {fmt(v)}
                    </td>
                  );
                })}
                <td class="r num strong" title={metric === 'payload_bytes' ? formatBytesExact(dayTotals[i]!) : undefined}>
                  {fmt(dayTotals[i]!)}
                </td>
              </tr>
            ))}
          </tbody>
          <tfoot>
            <tr>
              <th scope="row">Total</th>
              {ops.map((op, i) => (
                <td class="r num" key={op} title={metric === 'payload_bytes' ? formatBytesExact(opTotals[i]!) : undefined}>
                  {fmt(opTotals[i]!)}
                </td>
              ))}
              <td class="r num total" {...tally('history_total', total)} title={metric === 'payload_bytes' ? formatBytesExact(total) : undefined}>
                {fmt(total)}
              </td>
            </tr>
          </tfoot>
        </table>
      </ScrollTable>
    </div>
  );
}
