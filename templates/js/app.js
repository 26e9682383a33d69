// `{{name}}`: a CWASI function in JavaScript, a component of the world
// `cwasi:function/function` (wit/function.wit) built with componentize-js.
// It answers with its request upper-cased.
//
// To call another function by name:
//   import { call } from 'cwasi:function/invoke@0.1.0';
//   const answer = call('other', bytes);

export const handler = {
  handle(request) {
    // Throwing a string is the function's own failure: its caller gets
    // callee-error with it.
    if (request.length === 0) {
      throw "the request is empty: send some text, e.g. --data 'hello'";
    }
    const text = new TextDecoder().decode(request).toUpperCase();
    return new TextEncoder().encode(`${text} (upper-cased by {{name}}, in JavaScript)`);
  },
};
