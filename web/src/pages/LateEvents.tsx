import { useState } from 'preact/hooks';
import { getLateEvents, getUsage } from '../api';
import { tally } from '../components/Figures';
import { ScrollTable } from '../components/ScrollTable';
import { Loaded } from '../components/Status';
import { formatInt, formatUtc, operationName, periodLabel } from '../format';
import { useResource } from '../hooks';
import type { PeriodUsage } from '../types';
import { PeriodSelect } from '../components/PeriodSelect';

interface Props {
  orgId: string;
  periods: string[];
  /** This period's usage, already loaded by the page. */
  usage: PeriodUsage;
}

/** Events that arrived after their period had closed: counted, listed, never billed. */
export function LateEvents({ orgId, periods, usage }: Props) {
  const current = usage.period.id;
  const [period, setPeriod] = useState(current);
  const other = useResource(
    (signal) => (period === current ? Promise.resolve(usage) : getUsage(orgId, period, signal)),
    [orgId, period, current, usage],
  );
  const events = useResource((signal) => getLateEvents(orgId, period, signal), [orgId, period]);
  const choices = periods.includes(period) ? periods : [period, ...periods];
  return (
    <section id="late-events" class="section" aria-labelledby="late-h">
      <h2 id="late-h">Late events</h2>
      <p class="muted">
        Events that reached Tally after their period had closed. They are counted here and never billed: the period's invoice
        was already settled.
      </p>
      <div class="controls">
        <PeriodSelect id="late-period" value={period} choices={choices} current={current} onChange={setPeriod} />
      </div>
      <Loaded resource={other} what="the late-event count">
        {(u) => (
          <p class="late-count">
            <span class="big num" {...tally('late_count', u.not_billed.late)}>
              {formatInt(u.not_billed.late)}
            </span>{' '}
            late {u.not_billed.late === 1n ? 'event' : 'events'} in {periodLabel(u.period.id)}
          </p>
        )}
      </Loaded>
      <Loaded resource={events} what="the late events">
        {(e) =>
          e.late_events.length === 0 ? (
            <p>No late events listed for {periodLabel(e.period)}.</p>
          ) : (
            <ScrollTable label={`Late events, ${periodLabel(e.period)}`}>
              <table class="late">
                <caption class="visually-hidden">Late events of {periodLabel(e.period)}, newest arrival first (at most 1,000)</caption>
                <thead>
                  <tr>
                    <th scope="col">Event</th>
                    <th scope="col">Operation</th>
                    <th scope="col">Ended</th>
                    <th scope="col">Arrived</th>
                    <th scope="col">Would have been billable</th>
                    <th scope="col" class="r">
                      Payload (bytes)
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {e.late_events.map((ev) => (
                    <tr key={ev.event_id}>
                      <th scope="row" class="mono">
                        {ev.event_id}
                      </th>
                      <td>{operationName(ev.operation)}</td>
                      <td>
                        <time dateTime={ev.ended_at}>{formatUtc(new Date(ev.ended_at))}</time>
                      </td>
                      <td>
                        <time dateTime={ev.arrived_at}>{formatUtc(new Date(ev.arrived_at))}</time>
                      </td>
                      <td>{ev.billable ? 'yes' : 'no'}</td>
                      <td class="r num">{formatInt(ev.payload_bytes)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </ScrollTable>
          )
        }
      </Loaded>
    </section>
  );
}
