// Reads a fetch Response's server-sent events to the end with eventsource-parser.
import { createParser } from 'eventsource-parser';

export interface SseEvent {
  event: string | undefined;
  data: string;
}

/** Every event until the stream ends; onEvent sees each as it arrives (return true to stop reading). */
export async function readSse(res: Response, onEvent?: (e: SseEvent) => boolean | void): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  let stop = false;
  const parser = createParser({
    onEvent(e) {
      const ev = { event: e.event, data: e.data };
      events.push(ev);
      if (onEvent?.(ev)) stop = true;
    },
  });
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  while (!stop) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.feed(dec.decode(value, { stream: true }));
  }
  if (stop) await reader.cancel();
  return events;
}
