import { useEffect, useState } from 'preact/hooks';
import { getPipeline, listOrgs, type OrgListQuery } from '../api';
import { tally } from '../components/Figures';
import { ScrollTable } from '../components/ScrollTable';
import { Loaded } from '../components/Status';
import {
  basisPoints, formatBasisPoints, formatBytesExact, formatCents, formatDuration, formatGB, formatInt, formatUtc, maxBasisPoints,
  metricName, periodLabel, tierName,
} from '../format';
import { useDebounced, useInterval, useResource } from '../hooks';
import { BASE } from '../router';
import type { OrgRow, Pipeline, SortKey } from '../types';

/** The operator's page: every org, and the pipeline. */
export function AdminPage() {
  return (
    <>
      <div class="page-title">
        <h1 tabIndex={-1}>Operator</h1>
      </div>
      <nav class="section-nav" aria-label="Sections">
        <ul>
          <li>
            <a href="#orgs">Orgs</a>
          </li>
          <li>
            <a href="#pipeline">Pipeline</a>
          </li>
        </ul>
      </nav>
      <Orgs />
      <PipelineSection />
    </>
  );
}

const COLUMNS: { key: SortKey; label: string; numeric: boolean }[] = [
  { key: 'org_id', label: 'Org', numeric: false },
  { key: 'name', label: 'Name', numeric: false },
  { key: 'tier', label: 'Plan', numeric: false },
  { key: 'traces', label: 'Traces', numeric: true },
  { key: 'payload_bytes', label: 'Payload', numeric: true },
  { key: 'percent_used', label: 'Of included', numeric: true },
];

const PAGE = 50;

function Orgs() {
  const [q, setQ] = useState('');
  const search = useDebounced(q, 300);
  const [sort, setSort] = useState<SortKey>('org_id');
  const [order, setOrder] = useState<'asc' | 'desc'>('asc');
  // The cursors of the pages before this one (null: the first page) and this page's; a new
  // search or sort starts from the first page (a cursor belongs to one sort and order).
  const key = `${sort}|${order}|${search}`;
  const [paging, setPaging] = useState<{ key: string; previous: (string | null)[]; cursor: string | null }>({
    key,
    previous: [],
    cursor: null,
  });
  const page = paging.key === key ? paging : { key, previous: [], cursor: null };
  const { previous, cursor } = page;

  const params: OrgListQuery = { sort, order, q: search, cursor, limit: PAGE };
  const list = useResource((signal) => listOrgs(params, signal), [sort, order, search, cursor]);

  const sortBy = (key: SortKey, numeric: boolean) => {
    if (key === sort) setOrder(order === 'asc' ? 'desc' : 'asc');
    else {
      setSort(key);
      setOrder(numeric ? 'desc' : 'asc');
    }
  };
  const next = (c: string) => setPaging({ key, previous: [...previous, cursor], cursor: c });
  const back = () => setPaging({ key, previous: previous.slice(0, -1), cursor: previous[previous.length - 1] ?? null });
  const pageNumber = previous.length + 1;

  return (
    <section id="orgs" class="section" aria-labelledby="orgs-h">
      <h2 id="orgs-h">Orgs</h2>
      <form class="controls" role="search" onSubmit={(e) => e.preventDefault()}>
        <div class="field grow">
          <label for="org-search">Search orgs by id or name</label>
          <input id="org-search" type="search" maxLength={100} value={q} onInput={(e) => setQ((e.target as HTMLInputElement).value)} />
        </div>
      </form>
      <Loaded resource={list} what="the orgs">
        {(l) => (
          <>
            <p class="muted" role="status">
              {formatInt(l.total)} {l.total === 1n ? 'org' : 'orgs'}
              {search.trim() ? ` matching “${search.trim()}”` : ''}, {periodLabel(l.period)}; page {pageNumber}
              {list.state === 'loading' ? ' (updating…)' : ''}
            </p>
            <ScrollTable label="Org list">
              <table class="orgs">
                <caption class="visually-hidden">Orgs with this period's usage; column headers sort</caption>
                <thead>
                  <tr>
                    {COLUMNS.map((c) => {
                      const active = c.key === sort;
                      return (
                        <th
                          key={c.key}
                          scope="col"
                          class={c.numeric ? 'r' : undefined}
                          aria-sort={active ? (order === 'asc' ? 'ascending' : 'descending') : undefined}
                        >
                          <button type="button" class="sort" onClick={() => sortBy(c.key, c.numeric)}>
                            {c.label}
                            <span aria-hidden="true" class="sort-mark">
                              {active ? (order === 'asc' ? ' ▲' : ' ▼') : ' ↕'}
                            </span>
                          </button>
                        </th>
                      );
                    })}
                    <th scope="col">Warnings</th>
                    <th scope="col" class="r">
                      Draft total
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {l.orgs.length === 0 ? (
                    <tr>
                      <td colSpan={COLUMNS.length + 2}>No orgs found.</td>
                    </tr>
                  ) : (
                    l.orgs.map((o) => <OrgLine key={o.org_id} org={o} />)
                  )}
                </tbody>
              </table>
            </ScrollTable>
            <div class="actions pager">
              {/* While a page loads, the rows shown (and their cursor) may belong to the sort or
                  search before: paging waits for the answer. */}
              <button type="button" class="secondary" disabled={list.state === 'loading' || previous.length === 0} onClick={back}>
                Previous page
              </button>
              <button
                type="button"
                class="secondary"
                disabled={list.state === 'loading' || l.next_cursor === null}
                onClick={() => l.next_cursor && next(l.next_cursor)}
              >
                Next page
              </button>
            </div>
          </>
        )}
      </Loaded>
    </section>
  );
}

function OrgLine({ org }: { org: OrgRow }) {
  const pct = maxBasisPoints(basisPoints(org.traces, org.included.traces), basisPoints(org.payload_bytes, org.included.payload_bytes));
  return (
    <tr data-tally="org-row" data-org={org.org_id} data-value={org.traces.toString()}>
      <th scope="row">
        <a class="mono" href={`${BASE}/admin/orgs/${encodeURIComponent(org.org_id)}`}>
          {org.org_id}
        </a>
      </th>
      <td>{org.name}</td>
      <td>{tierName(org.tier)}</td>
      <td class="r num" {...tally('org_traces', org.traces)}>
        {formatInt(org.traces)}
      </td>
      <td class="r num" {...tally('org_payload_bytes', org.payload_bytes)} title={formatBytesExact(org.payload_bytes)}>
        {formatGB(org.payload_bytes)}
      </td>
      <td class="r num">{formatBasisPoints(pct)}</td>
      <td>
        {org.warnings.map((w) => (
          <span key={`${w.metric}${w.level}`} class={`badge badge-${w.level}`}>
            {metricName(w.metric)} {w.level === 'exceeded' ? '≥ 100%' : '≥ 90%'}
          </span>
        ))}
      </td>
      <td class="r num" {...tally('org_draft_total_cents', org.draft_total_cents)}>
        {formatCents(org.draft_total_cents)}
      </td>
    </tr>
  );
}

function PipelineSection() {
  const pipeline = useResource((s) => getPipeline(s), []);
  useInterval(pipeline.reload, 10_000);
  const [checked, setChecked] = useState<Date | null>(null);
  useEffect(() => {
    if (pipeline.state === 'ok') setChecked(new Date());
  }, [pipeline.state, pipeline.data]);
  return (
    <section id="pipeline" class="section" aria-labelledby="pipeline-h">
      <h2 id="pipeline-h">Pipeline</h2>
      <p class="muted">
        Refreshed every 10 seconds{checked ? `; last read ${formatUtc(checked).replace(' UTC', `:${String(checked.getUTCSeconds()).padStart(2, '0')} UTC`)}` : ''}.{' '}
        <button type="button" class="link" onClick={pipeline.reload}>
          Refresh now
        </button>
      </p>
      <Loaded resource={pipeline} what="the pipeline's state">
        {(p) => <PipelineView p={p} />}
      </Loaded>
    </section>
  );
}

function count(v: bigint | null | undefined): string {
  return v === null || v === undefined ? '—' : formatInt(v);
}

function age(seconds: number | bigint | null): string {
  if (seconds === null) return '—';
  const s = typeof seconds === 'bigint' ? Number(seconds) : seconds;
  if (s < 60) return `${s.toFixed(1)} s`;
  return formatDuration(s * 1000);
}

function PipelineView({ p }: { p: Pipeline }) {
  const down = p.stages.filter((s) => !s.ready);
  const r = p.billing_reporter;
  return (
    <div class="pipeline">
      <div aria-live="polite">
        {down.length > 0 ? (
          <p class="banner banner-exceeded">
            <strong>{down.length === 1 ? '1 stage is down' : `${down.length} stages are down`}:</strong> {down.map((s) => s.name).join(', ')}
          </p>
        ) : (
          <p class="banner banner-done">All {p.stages.length} stages are up.</p>
        )}
      </div>
      <div class="grid-2">
        <div class="card">
          <h3>Stages</h3>
          <ScrollTable label="Stages">
            <table>
              <thead>
                <tr>
                  <th scope="col">Stage</th>
                  <th scope="col">State</th>
                  <th scope="col">Why</th>
                  <th scope="col" class="r">
                    Last commit
                  </th>
                </tr>
              </thead>
              <tbody>
                {p.stages.map((s) => (
                  <tr key={s.name}>
                    <th scope="row">{s.name}</th>
                    <td>
                      <span class={`badge ${s.ready ? 'badge-ok' : 'badge-exceeded'}`}>{s.ready ? 'up' : 'down'}</span>
                    </td>
                    <td>{s.reason ?? '—'}</td>
                    <td class="r num">{s.last_commit_age_seconds === null ? '—' : `${age(s.last_commit_age_seconds)} ago`}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </ScrollTable>
        </div>
        <div class="card">
          <h3>Consumer lag</h3>
          <ScrollTable label="Consumer lag">
            <table>
              <thead>
                <tr>
                  <th scope="col">Group</th>
                  <th scope="col">Topic</th>
                  <th scope="col" class="r">
                    Lag (records)
                  </th>
                </tr>
              </thead>
              <tbody>
                {p.consumer_lag.map((c) => (
                  <tr key={`${c.group}/${c.topic ?? ''}`}>
                    <th scope="row" class="mono">
                      {c.group}
                    </th>
                    <td class="mono">{c.topic ?? '—'}</td>
                    <td class="r num">{c.error ? <span class="error-text">{c.error}</span> : count(c.lag)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </ScrollTable>
        </div>
        <div class="card">
          <h3>Events</h3>
          <dl class="pairs">
            <dt>Newest usage in the read models</dt>
            <dd>{p.last_record_at ? <time dateTime={p.last_record_at}>{formatUtc(new Date(p.last_record_at))}</time> : '—'}</dd>
            <dt>Late events this period</dt>
            <dd class="num">{count(p.late_events)}</dd>
            <dt>Rejected events</dt>
            <dd class="num">{count(p.rejected_events)}</dd>
          </dl>
        </div>
        <div class="card">
          <h3>Billing reporter</h3>
          {r === null ? (
            <p>No report from the billing reporter.</p>
          ) : (
            <dl class="pairs">
              <dt>Failed rows</dt>
              <dd class="num">{count(r.failed_rows)}</dd>
              <dt>Pending rows</dt>
              <dd class="num">{count(r.pending_rows)}</dd>
              <dt>Ahead rows</dt>
              <dd class="num">{count(r.ahead_rows)}</dd>
              <dt>Last success</dt>
              <dd>{r.last_success_at ? <time dateTime={r.last_success_at}>{formatUtc(new Date(r.last_success_at))}</time> : '—'}</dd>
            </dl>
          )}
        </div>
      </div>
    </div>
  );
}
