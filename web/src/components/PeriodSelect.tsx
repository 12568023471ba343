import { periodLabel } from '../format';

/** A labelled choice of period (`YYYY-MM`), this period marked. */
export function PeriodSelect({ id, value, choices, current, onChange }: {
  id: string;
  value: string;
  choices: string[];
  current: string;
  onChange: (period: string) => void;
}) {
  return (
    <div class="field">
      <label for={id}>Period</label>
      <select id={id} value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        {choices.map((p) => (
          <option key={p} value={p}>
            {periodLabel(p)}
            {p === current ? ' (this period)' : ''}
          </option>
        ))}
      </select>
    </div>
  );
}
