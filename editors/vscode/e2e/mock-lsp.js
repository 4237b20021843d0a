#!/usr/bin/env node
// A stand-in for souffleur-lsp (LSP over stdio, no dependencies) for the end-to-end test's --mock
// mode: it offers one inline completion, `MOCK_GHOST_TEXT` (default "souffleur_mock_ghost()"), with
// the `{completion_id, choice_index}` command argument that the real server sends, and appends every
// message it receives that matters to the test (initialize's options, configuration changes,
// souffleur/accepted, souffleur/dismissed) as JSON lines to `MOCK_LSP_LOG`.
'use strict';

const fs = require('node:fs');

const logFile = process.env.MOCK_LSP_LOG;
const ghost = process.env.MOCK_GHOST_TEXT || 'souffleur_mock_ghost()';
let counter = 0;

function log(entry) {
  if (logFile) {
    fs.appendFileSync(logFile, JSON.stringify(entry) + '\n');
  }
}

function send(message) {
  const body = Buffer.from(JSON.stringify({ jsonrpc: '2.0', ...message }), 'utf8');
  process.stdout.write(`Content-Length: ${body.length}\r\n\r\n`);
  process.stdout.write(body);
}

function handle(message) {
  const { id, method, params } = message;
  if (method === undefined) {
    return; // a response to something we never asked
  }
  switch (method) {
    case 'initialize':
      log({ method, initializationOptions: params.initializationOptions });
      send({
        id,
        result: {
          capabilities: { textDocumentSync: 1, inlineCompletionProvider: true, completionProvider: {} },
          serverInfo: { name: 'mock-souffleur-lsp', version: '0' },
        },
      });
      return;
    case 'textDocument/inlineCompletion': {
      counter += 1;
      const completionId = `cmpl-mock-${counter}`;
      log({ method, completion_id: completionId, position: params.position, uri: params.textDocument.uri });
      send({
        id,
        result: {
          items: [
            {
              insertText: ghost,
              command: { title: 'accepted', command: 'souffleur.accepted', arguments: [{ completion_id: completionId, choice_index: 0 }] },
            },
          ],
        },
      });
      return;
    }
    case 'textDocument/completion':
      send({ id, result: { isIncomplete: false, items: [] } });
      return;
    case 'workspace/didChangeConfiguration':
    case 'souffleur/accepted':
    case 'souffleur/dismissed':
      log({ method, params });
      return;
    case 'shutdown':
      send({ id, result: null });
      return;
    case 'exit':
      process.exit(0);
      return;
    default:
      if (id !== undefined) {
        send({ id, error: { code: -32601, message: `mock: no ${method}` } });
      }
  }
}

let buffer = Buffer.alloc(0);
process.stdin.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  for (;;) {
    const headerEnd = buffer.indexOf('\r\n\r\n');
    if (headerEnd < 0) {
      return;
    }
    const header = buffer.subarray(0, headerEnd).toString('ascii');
    const match = /Content-Length: *(\d+)/i.exec(header);
    if (!match) {
      process.stderr.write(`mock-lsp: bad header ${header}\n`);
      process.exit(1);
    }
    const length = Number(match[1]);
    if (buffer.length < headerEnd + 4 + length) {
      return;
    }
    const body = buffer.subarray(headerEnd + 4, headerEnd + 4 + length).toString('utf8');
    buffer = buffer.subarray(headerEnd + 4 + length);
    handle(JSON.parse(body));
  }
});
process.stdin.on('end', () => process.exit(0));
