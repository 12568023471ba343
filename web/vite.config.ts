import { defineConfig } from 'vitest/config';

// The page is served by the api under /app/ with a strict Content-Security-Policy
// (docs/page.md): no inline scripts or styles, so nothing is inlined into index.html and no
// asset is turned into a data: URL.
export default defineConfig({
  base: '/app/',
  oxc: {
    jsx: { runtime: 'automatic', importSource: 'preact' },
  },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    target: 'es2022',
    assetsInlineLimit: 0,
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
  server: {
    port: 5173,
    proxy: {
      // Host stays the dev server's, so the api's CSRF check (Origin against Host) passes.
      '/v1': { target: 'http://127.0.0.1:8080', changeOrigin: false },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
