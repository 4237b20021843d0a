// Bundles the extension and its runtime dependencies (vscode-languageclient) into out/extension.js,
// so the .vsix needs no node_modules. `vscode` is provided by the editor.
import { build } from 'esbuild';

await build({
  entryPoints: ['src/extension.ts'],
  bundle: true,
  outfile: 'out/extension.js',
  external: ['vscode'],
  platform: 'node',
  format: 'cjs',
  target: 'node18',
  sourcemap: false,
  minify: true,
  keepNames: true,
  logLevel: 'warning',
});
