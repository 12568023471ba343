import type { ComponentChildren } from 'preact';
import { messageOf } from '../api';
import type { Resource } from '../hooks';

export function Loading({ what }: { what: string }) {
  return (
    <p class="loading" role="status">
      Loading {what}…
    </p>
  );
}

export function ErrorMessage({ what, error, retry }: { what: string; error: unknown; retry?: () => void }) {
  return (
    <div class="error" role="alert">
      <p>
        <strong>Could not load {what}.</strong> {messageOf(error)}
      </p>
      {retry && (
        <button type="button" class="secondary" onClick={retry}>
          Try again
        </button>
      )}
    </div>
  );
}

/** Renders a resource: a loading line, an error with a retry, or `children(data)`. */
export function Loaded<T>({ resource, what, children }: { resource: Resource<T>; what: string; children: (data: T) => ComponentChildren }) {
  if (resource.state === 'error' && resource.data === null) return <ErrorMessage what={what} error={resource.error} retry={resource.reload} />;
  if (resource.data === null) return <Loading what={what} />;
  return (
    <>
      {resource.state === 'error' && <ErrorMessage what={`the latest ${what}`} error={resource.error} retry={resource.reload} />}
      {children(resource.data)}
    </>
  );
}
