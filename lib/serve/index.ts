/** The HTTP service: createServer (a ready Fastify app) and esolmPlugin (the routes, to embed in an existing app). */
export { createServer } from './server.js';
export type { ServeOptions, EsolmServer } from './server.js';
export { esolmPlugin } from './plugin.js';
export type { EsolmPluginOptions } from './plugin.js';
export type { ServeLimits } from './requests.js';
