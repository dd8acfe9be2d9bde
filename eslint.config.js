// ESLint: a few type-aware rules that each catch a real defect, not a style guide (tsc's strict mode already
// covers types). Run with `npm run lint`; CI runs it before the tests.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'dist-bench/', 'build/', 'node_modules/'] },
  {
    files: ['src/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      // Each file is checked with the types of its nearest tsconfig.json (src/, test/, bench/).
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // A promise nobody awaits or catches: on Node 20 its rejection ends the whole process. `void p` marks
      // one that cannot reject (the house style answers with outcome objects, not rejections).
      '@typescript-eslint/no-floating-promises': 'error',
      // An async function handed to something that ignores its promise (an EventEmitter listener, a timer,
      // forEach): its rejection goes unhandled, and an `if (promise)` is always true.
      '@typescript-eslint/no-misused-promises': 'error',
      // `await` on a value that is not a promise: left behind when a function stops being async, it hides
      // that the caller no longer waits for anything.
      '@typescript-eslint/await-thenable': 'error',
      // Dead imports, variables and trailing parameters (tsconfig has no noUnusedLocals); `_name` marks a
      // parameter kept for its position.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { args: 'after-used', argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
      ],
    },
  },
);
