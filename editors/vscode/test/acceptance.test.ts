import assert from 'node:assert/strict';
import { test } from 'node:test';
import { completionRefFromArguments, DismissalTracker, textAfterCursor } from '../src/acceptance';

test('completion refs from command arguments', () => {
  assert.deepEqual(completionRefFromArguments([{ completion_id: 'cmpl-1', choice_index: 2 }]), {
    completion_id: 'cmpl-1',
    choice_index: 2,
  });
  assert.deepEqual(completionRefFromArguments([{ completion_id: 'cmpl-1' }]), { completion_id: 'cmpl-1', choice_index: 0 });
  assert.deepEqual(completionRefFromArguments([{ completionId: 'c', choiceIndex: 1 }]), { completion_id: 'c', choice_index: 1 });
  assert.deepEqual(completionRefFromArguments(['cmpl-2', 3]), { completion_id: 'cmpl-2', choice_index: 3 });
  assert.equal(completionRefFromArguments(undefined), undefined);
  assert.equal(completionRefFromArguments([]), undefined);
  assert.equal(completionRefFromArguments([{ other: 1 }]), undefined);
  assert.equal(completionRefFromArguments([null]), undefined);
});

const a = { completion_id: 'A', choice_index: 0 };
const b = { completion_id: 'B', choice_index: 0 };

test('typing through a suggestion is not a dismissal; departing from it is', () => {
  const t = new DismissalTracker();
  t.offered({ uri: 'f', line: 3, linePrefix: 'let x = ' }, [{ ref: a, text: 'compute(1);\nmore' }]);
  assert.deepEqual(t.request({ uri: 'f', line: 3, linePrefix: 'let x = ' }), []);
  assert.deepEqual(t.request({ uri: 'f', line: 3, linePrefix: 'let x = comp' }), []);
  assert.deepEqual(t.request({ uri: 'f', line: 3, linePrefix: 'let x = compX' }), [a]);
  // reported once only
  assert.deepEqual(t.request({ uri: 'g', line: 0, linePrefix: '' }), []);
});

test('another file, another line, or deleting text dismisses', () => {
  for (const where of [
    { uri: 'g', line: 3, linePrefix: 'let x = ' },
    { uri: 'f', line: 4, linePrefix: '' },
    { uri: 'f', line: 3, linePrefix: 'let x =' },
  ]) {
    const t = new DismissalTracker();
    t.offered({ uri: 'f', line: 3, linePrefix: 'let x = ' }, [{ ref: a, text: 'compute(1);' }]);
    assert.deepEqual(t.request(where), [a], JSON.stringify(where));
  }
});

test('accepted suggestions are never reported as dismissed', () => {
  const t = new DismissalTracker();
  t.offered({ uri: 'f', line: 0, linePrefix: '' }, [
    { ref: a, text: 'x' },
    { ref: { completion_id: 'A', choice_index: 1 }, text: 'y' },
  ]);
  t.accepted(a);
  assert.deepEqual(t.request({ uri: 'f', line: 9, linePrefix: '' }), []);
  assert.deepEqual(t.flush(), []);
});

test('a new answer replaces the one being typed through; an empty one keeps it', () => {
  const t = new DismissalTracker();
  t.offered({ uri: 'f', line: 0, linePrefix: '' }, [{ ref: a, text: 'abc' }]);
  assert.deepEqual(t.request({ uri: 'f', line: 0, linePrefix: 'a' }), []);
  t.offered({ uri: 'f', line: 0, linePrefix: 'a' }, []);
  assert.deepEqual(t.request({ uri: 'f', line: 0, linePrefix: 'ab' }), []);
  t.offered({ uri: 'f', line: 0, linePrefix: 'ab' }, [{ ref: b, text: 'cdef' }]);
  assert.deepEqual(t.flush(), [b]);
  assert.deepEqual(t.flush(), []);
});

test('text after the cursor when the range starts before it', () => {
  assert.equal(textAfterCursor('let x = 1;', 'let x'), ' = 1;');
  assert.equal(textAfterCursor('= 1;', ''), '= 1;');
  assert.equal(textAfterCursor('other', 'let'), 'other');
});
