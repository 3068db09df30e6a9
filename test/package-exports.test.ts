import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// These tests exercise the BUILT package (dist/), resolved through package.json "exports"
// exactly as a consumer would. `npm test` runs `npm run build` first (pretest).
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

interface ExportShape {
  LockTable: string;
  LockError: string;
  lockErrorIsError: boolean;
}

const report = `JSON.stringify({
  LockTable: typeof m.LockTable,
  LockError: typeof m.LockError,
  lockErrorIsError: typeof m.LockError === 'function' && m.LockError.prototype instanceof Error,
})`;

function withConsumerDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'locktable-exports-'));
  try {
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(repoRoot, join(dir, 'node_modules', 'locktable'), 'dir');
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function runNode(dir: string, file: string, source: string): ExportShape {
  writeFileSync(join(dir, file), source);
  // Run without the parent's --import tsx so only plain Node resolution is involved.
  const out = execFileSync(process.execPath, [file], {
    cwd: dir,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return JSON.parse(out.trim()) as ExportShape;
}

function assertShape(shape: ExportShape): void {
  assert.equal(shape.LockTable, 'function');
  assert.equal(shape.LockError, 'function');
  assert.equal(shape.lockErrorIsError, true);
}

test('dist build exists', () => {
  for (const file of ['index.js', 'index.cjs', 'index.d.ts']) {
    assert.ok(existsSync(join(repoRoot, 'dist', file)), `dist/${file} missing: run npm run build`);
  }
});

test('built package loads as an ES module via import()', () => {
  withConsumerDir((dir) => {
    const shape = runNode(
      dir,
      'consumer.mjs',
      `const m = await import('locktable');\nconsole.log(${report});\n`,
    );
    assertShape(shape);
  });
});

test('built package loads as CommonJS via require()', () => {
  withConsumerDir((dir) => {
    const shape = runNode(
      dir,
      'consumer.cjs',
      `const m = require('locktable');\nconsole.log(${report});\n`,
    );
    assertShape(shape);
  });
});
