// mudgate.js: the browser client for a mudgate gateway, as an ES module (no build step, no
// CDN). The gateway serves it at <gateway>/mudgate.js; a game's page imports it from there:
//
//   import { MudgateClient } from "/mud/mudgate.js";
//   const client = new MudgateClient({ getToken: async () => (await fetch("/login")).text() });
//   client.addEventListener("say", (e) => console.log(e.detail.from, e.detail.text));
//   client.addEventListener("status", (e) => console.log(e.detail.state));
//   client.connect();
//   client.send({ op: "say", text: "hello" });
//
// It reconnects by close code (after 4010 and 1012 within a random moment of the window the
// server gives, with jittered exponential backoff otherwise, never after 1000, 1008, 4003 and
// 4009); an attempt that fails before it opens (refused, reset, timed out) is followed by the
// next one, with backoff. It asks for a new token when the server refuses the one it has (a
// handshake answered 401, or close code 4001), and falls back to Server-Sent Events with
// POST /commands where a WebSocket cannot be opened. Over SSE it POSTs one command at a time, in
// order (the server allows a player two requests under way), and holds at most `maxQueued`
// waiting for their turn.
//
// It resumes: it keeps the offset and epoch of the last event heard from each room and channel,
// names them when it reconnects (the server replays what was missed), and drops an event it has
// already had, so each reaches the page once. When the server says some are gone for good, a
// `messageslost` event tells the page.
//
// When the game behind the gateway restarts (`mudgate serve --game`), the connection stays
// open: `game_restarting` and `game_ready` events arrive, `client.game` says which holds
// ("ready" or "restarting"), and commands sent meanwhile are answered once the game is back.

/**
 * A message from the server: an event (`type: "event"`, named by `event`) or an error.
 * @typedef {{type: "event", event: string, [field: string]: unknown}} MudgateEvent
 * @typedef {{type: "error", code: string, message: string, id?: string | number, retry_after?: number}} MudgateError
 * @typedef {MudgateEvent | MudgateError} MudgateMessage
 */
/**
 * How the connection stands, in the `status` event's `detail`.
 * @typedef {{state: "connecting" | "open" | "retrying" | "closed", transport?: "websocket" | "sse", code?: number, delay?: number}} MudgateStatus
 */
/**
 * Where the client is in one topic ("room:hall", "channel:ooc"): the offset of the last event it
 * got there, in that epoch.
 * @typedef {{offset: number, epoch: string}} MudgatePosition
 */
/**
 * The `messageslost` event's `detail`: a topic whose events while the client was away could not
 * all be replayed (`reason`: "epoch_changed", "too_old", "offset_ahead", "too_much" or
 * "unavailable").
 * @typedef {{topic: string, room?: string, channel?: string, reason: string | null, resumed: MudgateEvent}} MudgateLoss
 */
/**
 * @typedef {object} MudgateOptions
 * @property {string | URL} [url] The gateway's root (default: where this module was served from).
 * @property {string | null} [token] A player token to start with.
 * @property {(context: {refresh: boolean}) => string | Promise<string>} [getToken]
 *   Where tokens come from when there is none, or the server refused the last one
 *   (`refresh: true`). Default: a guest token from POST auth/guest.
 * @property {"auto" | "websocket" | "sse"} [transport] Default "auto": WebSocket, else SSE.
 * @property {number} [maxBackoff] Longest wait between two attempts, ms (default 30000).
 * @property {boolean} [jitter] Default true: wait a random moment of the server's window before
 *   reconnecting after 1012 and 4010 (so players do not all return in one instant), and spread
 *   backoff by ±20 %. False: reconnect at once after 1012 and 4010, back off by exact doublings.
 * @property {number} [openTimeout] How long an attempt may take to open before it counts as
 *   failed, ms (default 10000).
 * @property {number} [maxQueued] Over SSE, how many commands may wait for the one being POSTed
 *   to be answered (default 64); past it `send()` answers false and an `error` event
 *   `queue_full` is dispatched.
 */

/** Close codes (mudgate.protocol.CloseCode) and what the client does about each. */
export const CLOSE = Object.freeze({
  NORMAL: 1000, GOING_AWAY: 1001, POLICY_VIOLATION: 1008, MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011, SERVICE_RESTART: 1012, TRY_AGAIN_LATER: 1013, UNAUTHORIZED: 4001,
  DISCONNECTED: 4003, SLOW_CONSUMER: 4008, REPLACED: 4009, RECYCLED: 4010, IDLE: 4011, RATE_LIMITED: 4029,
});
const NO_RECONNECT = new Set([CLOSE.NORMAL, CLOSE.POLICY_VIOLATION, CLOSE.DISCONNECTED, CLOSE.REPLACED]);
// The server asks these to come back within a window: at a random moment of it.
const WITHIN_WINDOW = new Set([CLOSE.RECYCLED, CLOSE.SERVICE_RESTART]);
/** The window when neither the close reason nor the last welcome gives one, ms. */
const RECONNECT_WINDOW = 5000;
const WINDOW_IN_REASON = /reconnect within ([0-9.]+) s/;
/** The longest resume string the server takes, bytes (names are ASCII). */
const MAX_RESUME_BYTES = 2048;
/** The least a close code asks a client to wait, ms. */
const BACKOFF_FLOOR = { [CLOSE.GOING_AWAY]: 1000, [CLOSE.SLOW_CONSUMER]: 1000,
                        [CLOSE.TRY_AGAIN_LATER]: 2000, [CLOSE.RATE_LIMITED]: 60000 };
/** SSE delivers events by name: the ones mudgate itself sends (a game's own come by name too
 * once listened for with `client.listen(name)`). */
const SSE_EVENTS = ["welcome", "say", "chat", "tell", "told", "narrate", "room", "arrive",
  "depart", "who", "help", "error", "ok", "pong", "subscribed", "unsubscribed", "rolled",
  "game_restarting", "game_ready", "resumed"];

/**
 * One player's connection to a mudgate gateway. Every message from the server is dispatched
 * twice, as a `message` event and as an event named after it (`say`, `room`, `error`, ...),
 * with the message as `detail`; `status` events say how the connection stands.
 */
export class MudgateClient extends EventTarget {
  /** The last event got from each topic, by topic. @type {Map<string, MudgatePosition>} */
  #positions = new Map();

  /** @param {MudgateOptions} [options] */
  constructor(options = {}) {
    super();
    this.base = new URL(options.url ?? ".", import.meta.url);
    /** @type {string | null} */
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? (() => this.#guestToken());
    this.transport = options.transport ?? "auto";
    this.maxBackoff = options.maxBackoff ?? 30000;
    this.maxQueued = options.maxQueued ?? 64;
    this.jitter = options.jitter ?? true;
    this.openTimeout = options.openTimeout ?? 10000;
    /** @type {WebSocket | null} */ this.socket = null;
    /** @type {EventSource | null} */ this.stream = null;
    this.attempt = 0;
    this.everOpened = false;
    this.closed = false;
    this.sseEvents = new Set(SSE_EVENTS);
    /** Whether the game behind the gateway answers: "ready", or "restarting" (commands wait). */
    this.game = "ready";
    /** @type {ReturnType<typeof setTimeout> | null} */ this.timer = null;
    // Over SSE, the commands waiting for the one under way: POSTed one at a time, in order.
    /** @type {{frame: object, resolve: (sent: boolean) => void, reject: (error: unknown) => void}[]} */
    this.queue = [];
    this.posting = false;
    // Where the player is, from the welcome and what follows it; named on each reconnect.
    /** @type {string | null} The player's id (the last welcome's). */ this.player = null;
    /** @type {string | null} The room the player is in. */ this.room = null;
    /** @type {Set<string>} The channels the player listens to. */ this.channels = new Set();
    /** @type {number | null} The last welcome's reconnect window, ms. */ this.reconnectWindow = null;
  }

  /** The offset and epoch of the last event got from each topic, by topic ("room:hall").
   * @returns {Record<string, MudgatePosition>} */
  get positions() {
    return Object.fromEntries([...this.#positions].map(([topic, { offset, epoch }]) => [topic, { offset, epoch }]));
  }

  /** What the next connection names to resume ("room:hall:41:9f86d081,channel:ooc:7:0c1d2e3f"):
   * the room, then the channels, each at the last event got there (a topic heard nothing from
   * yet at offset 0); "" before the first welcome. */
  get resumeString() {
    const topics = [...(this.room === null ? [] : [`room:${this.room}`]), ...[...this.channels].map((c) => `channel:${c}`)];
    let resume = "";
    for (const topic of topics) {
      const { offset, epoch } = this.#positions.get(topic) ?? { offset: 0, epoch: "" };
      const entry = `${resume ? "," : ""}${topic}:${offset}:${epoch}`;
      if (resume.length + entry.length > MAX_RESUME_BYTES) break;
      resume += entry;
    }
    return resume;
  }

  /** Open the connection, and keep it open until `close()` or a code that says not to. */
  connect() { this.closed = false; this.#connect(); return this; }

  /** Close for good (code 1000); no reconnect. Commands still waiting are not sent. */
  close() {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const { resolve } of this.queue.splice(0)) resolve(false);
    if (this.socket) this.socket.close(CLOSE.NORMAL);
    if (this.stream) this.stream.close();
    this.socket = this.stream = null;
    this.#status({ state: "closed", code: CLOSE.NORMAL });
  }

  /**
   * Send one frame (`{op: "say", text: "hi"}`). Over SSE it is POSTed to /commands once the
   * commands sent before it are answered (so they are served in order, and this client never
   * has more than one request under way); an error the server answers there is dispatched as an
   * `error` event, like one over the WebSocket. Past `maxQueued` commands waiting, it is not
   * sent and an `error` event `queue_full` says so.
   * @param {{op: string, [field: string]: unknown}} frame
   * @returns {Promise<boolean>} whether it was sent and accepted (false: not connected, refused,
   *   or the queue was full)
   */
  async send(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame)); return true;
    }
    if (!this.stream) return false;
    if (this.queue.length >= this.maxQueued) {
      this.#dispatch({ type: "error", code: "queue_full", id: frame.id,
        message: `${this.queue.length} commands are already waiting to be sent: wait for their answers` });
      return false;
    }
    const sent = new Promise((resolve, reject) => this.queue.push({ frame, resolve, reject }));
    this.#post();
    return sent;
  }

  /** Over SSE, a game's own event names must be listened for: `client.listen("emote")`. */
  listen(name) {
    if (!this.sseEvents.has(name)) {
      this.sseEvents.add(name);
      if (this.stream) this.#listenSSE(this.stream, name);
    }
    return this;
  }

  // The connection's life

  async #connect() {
    if (this.closed) return;
    this.#status({ state: "connecting" });
    try { if (!this.token) this.token = await this.getToken({ refresh: false }); }
    catch (error) { this.#dispatch({ type: "error", code: "no_token", message: String(error.message ?? error) }); return this.#retry(CLOSE.TRY_AGAIN_LATER); }
    if (this.transport === "sse" || typeof WebSocket === "undefined") return this.#connectSSE();
    const url = new URL(`ws?${this.#query("resume")}`, this.base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let opened = false, socket;
    try { socket = this.socket = new WebSocket(url); } catch (error) { return this.#connectSSE(); }
    // A handshake that hangs (a proxy that accepts and never answers) fails like a refused one.
    const hanging = setTimeout(() => socket.close(), this.openTimeout);
    socket.onopen = () => {
      clearTimeout(hanging);
      opened = this.everOpened = true; this.attempt = 0;
      this.#status({ state: "open", transport: "websocket" });
    };
    socket.onmessage = (message) => this.#receive(JSON.parse(message.data));
    socket.onclose = async (event) => {
      clearTimeout(hanging);
      if (this.socket === socket) this.socket = null;
      if (this.closed) return;
      if (!opened && this.token && await this.#refused(this.token)) return this.#refresh();
      if (!opened && !this.everOpened && this.transport === "auto") {
        if (this.attempt >= 1) return this.#connectSSE();  // no WebSocket through here
        this.attempt += 1; this.timer = setTimeout(() => this.#connect(), 300); return;
      }
      if (event.code === CLOSE.UNAUTHORIZED) return this.#refresh();
      this.#retry(event.code, event.reason);
    };
  }

  /** The query of a new connection: the token, and where to resume from (as `resume`, or SSE's
   * `last_event_id`) once there is somewhere to resume. */
  #query(resumeName) {
    const query = new URLSearchParams({ token: this.token });
    const resume = this.resumeString;
    if (resume) query.set(resumeName, resume);
    return query;
  }

  #connectSSE() {
    this.transport = "sse";
    const stream = this.stream = new EventSource(new URL(`events?${this.#query("last_event_id")}`, this.base));
    let opened = false;
    // A stream that does not open in time is given up (closing it fires no error of its own).
    const hanging = setTimeout(() => {
      stream.close(); if (this.stream === stream) this.stream = null;
      this.#retry(1006);
    }, this.openTimeout);
    stream.onopen = () => {
      clearTimeout(hanging);
      opened = this.everOpened = true; this.attempt = 0; this.#status({ state: "open", transport: "sse" });
    };
    for (const name of this.sseEvents) this.#listenSSE(stream, name);
    stream.addEventListener("close", (e) => {
      clearTimeout(hanging);
      stream.close(); if (this.stream === stream) this.stream = null;
      const { code, reason } = JSON.parse(e.data);
      if (code === CLOSE.UNAUTHORIZED) return this.#refresh();
      this.#retry(code, reason);
    });
    stream.onerror = async () => {
      if (stream.readyState !== EventSource.CLOSED) { this.#status({ state: "retrying", transport: "sse" }); return; }
      clearTimeout(hanging);
      if (this.stream === stream) this.stream = null;
      if (!opened && this.token && await this.#refused(this.token)) return this.#refresh();
      this.#retry(1006);
    };
  }

  /** POST the queued commands one at a time, in order, while there is a stream to answer on. */
  async #post() {
    if (this.posting) return;
    this.posting = true;
    try {
      while (this.queue.length) {
        const { frame, resolve, reject } = this.queue.shift();
        if (!this.stream) { resolve(false); continue; }
        try {
          const response = await fetch(new URL("commands", this.base), { method: "POST",
            body: JSON.stringify(frame), headers: this.#bearer(this.token) });
          if (!response.ok) {
            const { error } = await response.json();
            this.#dispatch({ type: "error", code: error.code, message: error.message, id: frame.id });
          }
          resolve(response.ok);
        } catch (error) { reject(error); }  // this command's failure; the next one still goes
      }
    } finally { this.posting = false; }
  }

  #listenSSE(stream, name) {
    stream.addEventListener(name, (e) => this.#receive(JSON.parse(e.data)));
  }

  /** A new token, then at once again: the server refused the one we had. */
  async #refresh() {
    this.token = null;
    this.dispatchEvent(new CustomEvent("tokenrefused"));
    try { this.token = await this.getToken({ refresh: true }); }
    catch (error) { return this.#retry(CLOSE.TRY_AGAIN_LATER); }
    this.attempt = 0;
    this.timer = setTimeout(() => this.#connect(), 0);
  }

  /** The next attempt, after the wait `code` (and the close's `reason`) asks for; none after a
   * code that says not to come back. Any other way an attempt ends (1006: refused, reset, timed
   * out) comes here too, so the client keeps trying. */
  #retry(code, reason = "") {
    if (this.closed) return;
    if (NO_RECONNECT.has(code)) { this.closed = true; this.#status({ state: "closed", code }); return; }
    const delay = this.#delay(code, reason);
    this.attempt += 1;
    this.#status({ state: "retrying", code, delay });
    this.timer = setTimeout(() => this.#connect(), delay);
  }

  /** How long to wait before the next attempt, ms. After 1012 and 4010: a random moment of the
   * window the close reason gives ("...; reconnect within 2.5 s"), else the last welcome's
   * `reconnect_window`, else 5 s. Otherwise exponential backoff from 500 ms, capped at
   * `maxBackoff`, spread by ±20 %, never under the least the code asks for (60 s after 4029). */
  #delay(code, reason) {
    if (WITHIN_WINDOW.has(code)) {
      if (!this.jitter) return 0;
      const said = Number(WINDOW_IN_REASON.exec(reason ?? "")?.[1]);
      const window = Number.isFinite(said) ? said * 1000 : this.reconnectWindow ?? RECONNECT_WINDOW;
      return Math.random() * window;
    }
    const backoff = 500 * 2 ** Math.min(this.attempt, 16) * (this.jitter ? 0.8 + Math.random() * 0.4 : 1);
    return Math.max(BACKOFF_FLOOR[code] ?? 0, Math.min(this.maxBackoff, backoff));
  }

  /** Whether the server refuses this token (a browser hides a refused handshake's status;
   * POST /commands answers 401 to a bad token before anything else). */
  async #refused(token) {
    try {
      const response = await fetch(new URL("commands", this.base), { method: "POST", body: "{}",
        headers: this.#bearer(token), signal: AbortSignal.timeout(this.openTimeout) });
      return response.status === 401;
    } catch (error) { return false; }
  }

  async #guestToken() {
    const response = await fetch(new URL("auth/guest", this.base), { method: "POST" });
    if (!response.ok) throw new Error((await response.json()).error.message);
    return (await response.json()).token;
  }

  #bearer(token) { return { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }; }

  /** @param {MudgateStatus} detail */
  #status(detail) { this.dispatchEvent(new CustomEvent("status", { detail })); }

  /** A message from the server: where the player is and what they heard is noted, and an event
   * already had (its offset at or before the last one got from its topic, in the same epoch:
   * the server may replay what it is not sure was delivered) is dropped.
   * @param {MudgateMessage} message */
  #receive(message) {
    if (message.type === "error" && message.code === "forbidden_topic" && typeof message.topic === "string") {
      // The server will not resume it: stop naming it.
      this.#positions.delete(message.topic);
      if (message.topic.startsWith("channel:")) this.channels.delete(message.topic.slice(8));
    }
    if (message.type !== "event") return this.#dispatch(message);
    const topic = typeof message.room === "string" ? `room:${message.room}`
      : typeof message.channel === "string" ? `channel:${message.channel}` : null;
    if (topic && typeof message.offset === "number" && typeof message.epoch === "string") {
      const last = this.#positions.get(topic);
      if (message.event === "resumed") {
        this.#positions.set(topic, { offset: message.offset, epoch: message.epoch });
      } else if (last && last.epoch === message.epoch && message.offset <= last.offset) {
        return;  // had it
      } else {
        this.#positions.set(topic, { offset: message.offset, epoch: message.epoch });
        if (message.channel !== undefined && message.room === undefined) this.channels.add(message.channel);
      }
    }
    switch (message.event) {
      case "welcome":
        this.player = message.player; this.room = message.room;
        if (typeof message.reconnect_window === "number") this.reconnectWindow = message.reconnect_window * 1000;
        this.#adopt(`room:${message.room}`, message.position);
        break;
      case "arrive":
        if (message.player === this.player && message.room !== this.room) {
          this.#positions.delete(`room:${this.room}`);  // a room left is not resumed
          this.room = message.room;
        }
        break;
      case "subscribed":
        this.channels.add(message.channel); this.#adopt(`channel:${message.channel}`, message.position);
        break;
      case "unsubscribed":
        this.channels.delete(message.channel); this.#positions.delete(`channel:${message.channel}`);
        break;
    }
    this.#dispatch(message);
    if (message.event === "resumed" && message.recovered === false) {
      const where = message.room !== undefined ? { room: message.room } : { channel: message.channel };
      /** @type {MudgateLoss} */
      const detail = { topic, ...where, reason: message.reason ?? null, resumed: message };
      this.dispatchEvent(new CustomEvent("messageslost", { detail }));
    }
  }

  /** Where a topic the client has heard nothing from yet is now (the welcome's room, a
   * channel just subscribed): what it resumes from if it reconnects before it hears anything.
   * @param {string} topic @param {any} position */
  #adopt(topic, position) {
    if (position && typeof position.offset === "number" && typeof position.epoch === "string"
        && !this.#positions.has(topic)) {
      this.#positions.set(topic, { offset: position.offset, epoch: position.epoch });
    }
  }

  /** @param {MudgateMessage} message */
  #dispatch(message) {
    if (message.event === "game_restarting") this.game = "restarting";
    else if (message.event === "game_ready") this.game = "ready";
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
    const name = message.type === "event" ? message.event : message.type;
    if (name && name !== "message" && name !== "status") this.dispatchEvent(new CustomEvent(name, { detail: message }));
  }
}
