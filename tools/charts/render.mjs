// Renders one Vega-Lite specification (JSON on stdin) to SVG (on stdout).
// Used by Pai.Host.Reports.ChartRenderer; install the dependencies with `npm ci` in this folder.
// No canvas package is needed: without one, Vega estimates text widths, which is enough for SVG.
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

try {
  const spec = JSON.parse(await readStdin());
  const compiled = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', logLevel: vega.Warn });
  const svg = await view.toSVG();
  view.finalize();
  process.stdout.write(svg);
} catch (error) {
  process.stderr.write(`pai charts: ${error && error.stack ? error.stack : error}\n`);
  process.exitCode = 1;
}
