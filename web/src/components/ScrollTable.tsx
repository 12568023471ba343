import type { ComponentChildren } from 'preact';

/** A table that scrolls sideways on narrow screens: a focusable, labelled region. */
export function ScrollTable({ label, children }: { label: string; children: ComponentChildren }) {
  return (
    <div class="table-scroll" tabIndex={0} role="region" aria-label={label}>
      {children}
    </div>
  );
}
