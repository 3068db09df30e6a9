import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    ignores: ['dist/', 'node_modules/', 'benchmarks/results/', 'benchmarks/.cache/'],
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    // Plain JavaScript (examples, worker fixtures) runs on Node: its globals are defined.
    files: ['**/*.mjs', '**/*.js'],
    languageOptions: {
      globals: Object.fromEntries(
        [
          'console',
          'process',
          'performance',
          'setTimeout',
          'clearTimeout',
          'setImmediate',
          'setInterval',
          'clearInterval',
          'URL',
          'SharedArrayBuffer',
          'Atomics',
          'structuredClone',
        ].map((name) => [name, 'readonly']),
      ),
    },
  },
  {
    rules: {
      'no-constant-condition': ['error', { checkLoops: false }],
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
        },
      ],
    },
  },
);
