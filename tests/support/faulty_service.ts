/**
 * A service that misbehaves at the TCP level, one way per path: /fail answers 500 with no
 * JSON, /hang never answers, /stall sends the headers and half the body then nothing,
 * /drop closes the connection without a word, /dropbody closes it in the middle of the
 * body, /garbage answers something that is not HTTP. It counts the requests per path.
 */
export const FAULTS = ["fail", "hang", "stall", "drop", "dropbody", "garbage"] as const;
export type Fault = typeof FAULTS[number];

export interface FaultyService {
  url(fault: Fault): string;
  requests: Record<string, number>;
  close(): Promise<void>;
}

const encoder = new TextEncoder();

async function readRequest(conn: Deno.Conn): Promise<string | undefined> {
  const buf = new Uint8Array(64 * 1024);
  let text = "";
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return undefined;
    text += new TextDecoder().decode(buf.subarray(0, n));
    const end = text.indexOf("\r\n\r\n");
    if (end < 0) continue;
    const length = Number(/content-length:\s*(\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
    if (text.length - end - 4 >= length) return text.split(" ")[1];
  }
}

export function faultyService(): FaultyService {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const requests: Record<string, number> = {};
  const write = (conn: Deno.Conn, text: string) => conn.write(encoder.encode(text));
  const close = (conn: Deno.Conn) => {
    open.delete(conn);
    try {
      conn.close();
    } catch {
      // closed already
    }
  };
  const handle = async (conn: Deno.Conn) => {
    open.add(conn);
    try {
      const path = await readRequest(conn);
      const fault = path?.slice(1) ?? "";
      requests[fault] = (requests[fault] ?? 0) + 1;
      switch (fault) {
        case "fail":
          await write(
            conn,
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n" +
              "content-length: 5\r\nconnection: close\r\n\r\noops!",
          );
          return close(conn);
        case "hang":
          return; // held open until the client gives up or the service closes
        case "stall":
          await write(
            conn,
            'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"result": ',
          );
          return;
        case "dropbody":
          await write(
            conn,
            'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"result": ',
          );
          return close(conn);
        case "garbage":
          await write(conn, "THIS IS NOT HTTP\r\n\r\n");
          return close(conn);
        default:
          return close(conn);
      }
    } catch {
      close(conn);
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) handle(conn);
    } catch {
      // the listener was closed
    }
  })();
  const { port } = listener.addr as Deno.NetAddr;
  return {
    url: (fault) => `http://127.0.0.1:${port}/${fault}`,
    requests,
    async close() {
      listener.close();
      for (const conn of [...open]) close(conn);
      await accepting;
    },
  };
}
