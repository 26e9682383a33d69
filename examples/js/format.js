// `format`: an example CWASI function written in JavaScript, built into a
// component with componentize-js (docs/guest-javascript.md).
//
// It reads `key=value` lines and answers with them as one JSON object.
// A line without `=` is the handler's own error: its caller gets
// `callee-error` with the message.

export const handler = {
  handle(request) {
    const text = new TextDecoder().decode(request);
    const record = {};
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const eq = line.indexOf('=');
      if (eq < 0) throw `not a key=value line: ${JSON.stringify(line)}`;
      record[line.slice(0, eq)] = line.slice(eq + 1);
    }
    return new TextEncoder().encode(JSON.stringify(record));
  },
};
