// Parses each file named on the command line with Mermaid's own parser and prints one line
// per file that fails ("path: message"); exits 1 if any did. Mermaid sanitizes labels with
// DOMPurify, which needs a DOM: jsdom provides one.
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';

const { window } = new JSDOM('');
globalThis.window = window;
globalThis.document = window.document;
const { default: mermaid } = await import('mermaid');

let failed = 0;
for (const path of process.argv.slice(2)) {
  try {
    await mermaid.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    failed++;
    console.log(`${path}: ${String(e.message ?? e).replace(/\n/g, ' ')}`);
  }
}
process.exitCode = failed ? 1 : 0;
