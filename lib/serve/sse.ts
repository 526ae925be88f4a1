/**
 * Server-sent events over a raw Node response (the route hijacks the reply): `data:` lines
 * with JSON, optional `event:` names, and OpenAI's closing `data: [DONE]`.
 */
import type { ServerResponse } from 'node:http';

export class SseWriter {
  private readonly res: ServerResponse;
  private closed_ = false;

  constructor(res: ServerResponse, headers: Record<string, string> = {}) {
    this.res = res;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',  // proxies (nginx) must not buffer the stream
      ...headers,
    });
    res.flushHeaders();
    res.on('close', () => { this.closed_ = true; });
  }

  /** True once the client has gone or end() was called. */
  get closed(): boolean {
    return this.closed_ || this.res.destroyed;
  }

  /** One event: `event: name` (optional) and the JSON data. */
  send(data: unknown, event?: string): void {
    if (this.closed) return;
    this.res.write(`${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`);
  }

  /** `data: [DONE]`, then the end of the response. */
  done(): void {
    if (this.closed) return;
    this.res.write('data: [DONE]\n\n');
    this.end();
  }

  end(): void {
    if (this.closed) return;
    this.closed_ = true;
    this.res.end();
  }
}
