import { defineConfig } from 'vitest/config';

// Native addon: forks (a crash kills one child, not the runner). The summary reporter
// prints the plain "N passed, N failed, N skipped" closing line CI reads.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
