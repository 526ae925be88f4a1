// `require('esolm')`: esolm is an ES module. Node >= 20.19 can require() it; older
// versions get this message instead of ERR_REQUIRE_ESM / ERR_PACKAGE_PATH_NOT_EXPORTED.
try {
  module.exports = require('./index.js');
} catch (e) {
  const code = (e as { code?: string }).code;
  if (code !== 'ERR_REQUIRE_ESM' && code !== 'ERR_REQUIRE_ASYNC_MODULE') throw e;
  throw new Error(`esolm is an ES module and this Node (${process.versions.node}) cannot require() it: ` +
    "use `import { Model } from 'esolm'` (or `await import('esolm')` from CommonJS), or Node >= 20.19", { cause: e });
}
