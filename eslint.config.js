// Lint: the TypeScript-aware recommended set, plus a few rules that catch real bugs in async I/O code.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'native/build/**', 'node_modules/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'smart'],
      'prefer-const': 'error',
    },
  },
  {
    // Only entry points read the environment or own the process.
    files: ['src/**/*.ts'],
    ignores: ['src/**/main.ts', 'src/**/app.ts', 'src/cli/**'],
    rules: {
      'no-restricted-properties': ['error',
        { object: 'process', property: 'env', message: 'only main.ts/app.ts read the environment; pass config in' },
        { object: 'process', property: 'exit', message: 'only entry points end the process' }],
    },
  },
);
