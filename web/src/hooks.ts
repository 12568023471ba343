import { useCallback, useEffect, useRef, useState } from 'preact/hooks';

export type Resource<T> =
  | { state: 'loading'; data: T | null; error: null; reload: () => void }
  | { state: 'ok'; data: T; error: null; reload: () => void }
  | { state: 'error'; data: T | null; error: unknown; reload: () => void };

/**
 * Loads `load` when `deps` change (aborting the previous load) and on `reload()`. While a reload
 * runs, the previous data stays available so the page does not flash empty.
 */
export function useResource<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Resource<T> {
  const [version, setVersion] = useState(0);
  const [result, setResult] = useState<{ state: 'loading' | 'ok' | 'error'; data: T | null; error: unknown }>({
    state: 'loading',
    data: null,
    error: null,
  });
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    const controller = new AbortController();
    setResult((r) => ({ state: 'loading', data: r.data, error: null }));
    loadRef.current(controller.signal).then(
      (data) => {
        if (!controller.signal.aborted) setResult({ state: 'ok', data, error: null });
      },
      (error: unknown) => {
        if (!controller.signal.aborted) setResult((r) => ({ state: 'error', data: r.data, error }));
      },
    );
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, version]);
  const reload = useCallback(() => setVersion((v) => v + 1), []);
  return { ...result, reload } as Resource<T>;
}

/** Calls `tick` every `ms` while mounted (and while the tab is visible). */
export function useInterval(tick: () => void, ms: number | null): void {
  const ref = useRef(tick);
  ref.current = tick;
  useEffect(() => {
    if (ms === null) return undefined;
    const id = setInterval(() => {
      if (document.visibilityState !== 'hidden') ref.current();
    }, ms);
    return () => clearInterval(id);
  }, [ms]);
}

/** The current time, refreshed every `ms`. */
export function useNow(ms = 60_000): Date {
  const [now, setNow] = useState(() => new Date());
  useInterval(() => setNow(new Date()), ms);
  return now;
}

/** A value that follows `value` after it has stopped changing for `ms`. */
export function useDebounced<T>(value: T, ms: number): T {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const id = setTimeout(() => setDebounced(value), ms);
    return () => clearTimeout(id);
  }, [value, ms]);
  return debounced;
}
