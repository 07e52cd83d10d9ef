/*
 * Many pushsvc SSE subscribers in one process, in C: bench/loadgen's `deliveries` mode for
 * the runs where the clients must not starve the server they share the cores with.
 *
 * Why C: at 100,000 streams on two cores, the Python subscriber (asyncio, orjson) spends
 * more CPU per delivery than the server does, so the machine saturates and the latency
 * measured is the clients' queue. This one reads each delivery with a few hundred
 * instructions and no allocation.
 *
 * What it does (bench/loadgen/cclient.py compiles and runs it; the driver speaks to it as
 * to `python -m bench.loadgen --mode deliveries --wait-go --hold`):
 *
 *   - opens --subscribers N streams (`GET <path> HTTP/1.1`) round-robin over the --stream
 *     URLs (a `{i}` in a path is stream i's number plus --first: a channel per stream, e.g.
 *     /topics/u{i}/messages, several programs taking turns by --first), from --source (a 127.0.0.x of its own: each source address has its own
 *     ephemeral ports), at most 100 not yet live at once (below gevent's listen backlog);
 *   - frames each response strictly: status 200, text/event-stream, a chunked or
 *     close-delimited body (no Content-Length), LF line ends (a CR is refused, not guessed);
 *   - `event: snapshot` makes a stream ready; each `event: stats` whose data holds an
 *     `event` is a delivery: its `id:` must be above the stream's previous update id, its
 *     event's `value` an integer in 0..M-1 seen once and in order, and publish-to-receive
 *     latency is CLOCK_REALTIME at the read minus the event's `tags.sent`; an update without
 *     `event` (a window tick) is not a delivery; `:` lines (heartbeats) are ignored; any
 *     other event type fails the stream;
 *   - with --messages it reads an application message stream instead (pushsvc's
 *     /topics/T/messages, or a peer relaying the same message: nchan, sse-starlette): a
 *     stream is ready once its response head has come (pushsvc primes a messages stream
 *     before its head; a driver checks a peer's own count), and every message with data,
 *     named or not, is a delivery whose data is the published JSON object with `value` and
 *     `tags.sent` at its top; `event: gap` is counted as a gap; a message without data (a
 *     bare `id:`) is none; ids are checked where they are pushsvc's, other ids ignored;
 *   - with --reconnect it comes back as EventSource does: a stream the server ends (or a
 *     connection refused while it is down) is opened again after the last `retry:` it was
 *     sent, with `Last-Event-ID` (the last `id:` dispatched), and its counts go on across its
 *     connections: an update replayed twice is a duplicate, one never replayed is missing, a
 *     snapshot that says `"gap": true` is counted (`gaps`). The drained record then tells when
 *     the streams came back (`last_back_at`: the newest response head of a reconnect), the
 *     `retry:` values seen, and, per event value, when it was published and when the last
 *     stream got it (`values`: [sent, last received] pairs), so that a driver can tell when
 *     every client was current again;
 *   - stdin lines drive the phases: after {"phase": "opened"} it waits for a line ("go"),
 *     then for another ("published"), then drains until every stream is complete, or
 *     --idle-timeout without a delivery, or --drain-timeout; {"phase": "drained"}; with
 *     --hold it waits for one more line ("measured") before closing the streams (a server
 *     ends a stream as soon as its client leaves, which is not part of delivering); then
 *     {"phase": "result"}: the counts summed over its streams and latency percentiles
 *     (nearest rank), as bench/loadgen/run.py reports them. EOF on stdin counts as a line.
 *
 * Build: cc -O2 -o sse_clients sse_clients.c (Linux: epoll).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECTING_AT_ONCE 100
#define MAX_URLS 16
#define MAX_HEAD 16384
#define MAX_LINE (4 << 20) /* a snapshot's data line may be long; nothing else is */
#define MAX_KEYS 32        /* distinct error texts reported */
#define READ_SIZE 65536
#define STDIN_TAG UINT64_MAX

/* ---- errors counted by text, as the Python load generator's dicts ---------------- */

struct counts {
    char key[MAX_KEYS][128];
    long n[MAX_KEYS];
    int used;
};

static void count_key(struct counts *c, const char *key) {
    for (int i = 0; i < c->used; i++)
        if (strcmp(c->key[i], key) == 0) {
            c->n[i]++;
            return;
        }
    if (c->used == MAX_KEYS) key = "(more kinds of error)";
    int i = c->used < MAX_KEYS ? c->used++ : MAX_KEYS - 1;
    snprintf(c->key[i], sizeof c->key[i], "%s", key);
    c->n[i]++;
}

/* ---- one stream ------------------------------------------------------------------- */

enum conn_state { C_IDLE, C_CONNECTING, C_HEAD, C_BODY, C_ENDED };
enum chunk_state { K_SIZE, K_DATA, K_CRLF, K_TRAILER, K_END };
enum message_kind { M_NONE, M_STATS, M_SNAPSHOT, M_MESSAGE, M_GAP };

struct conn {
    int fd;
    int url;
    enum conn_state state;
    int chunked;
    enum chunk_state chunk;
    uint64_t chunk_left;
    char chunk_line[32]; /* a chunk-size line (or the CRLF after a chunk) cut across reads */
    size_t chunk_line_len;
    char *line; /* a line (or head) split across reads; NULL when none */
    size_t line_len, line_cap;
    /* the message being read */
    enum message_kind kind;
    int has_data, has_id, is_delivery;
    uint64_t msg_id[3]; /* <epoch>:<ms>-<seq>, compared as a tuple */
    long value;
    double sent;
    char id_text[96];         /* the message's raw `id:`, for Last-Event-ID */
    size_t id_text_len;
    /* --reconnect: what an EventSource keeps across connections */
    char last_event_id[96];
    size_t last_event_id_len;
    long retry_ms;
    double back_at; /* the response head of the newest reconnect (CLOCK_REALTIME) */
    /* the stream's record */
    uint64_t last_id[3];
    int ready, complete, closing;
    const char *error;
    unsigned char *seen; /* one byte per expected value */
    long high, received, distinct, duplicates, out_of_order, unexpected, id_regressions;
    long reconnects, gaps;
    double complete_at;
    long bytes;
};

static struct {
    char host[MAX_URLS][64];
    int port[MAX_URLS];
    char request[MAX_URLS][640];
    int urls;
    const char *source;
    long subscribers, events;
    double connect_timeout, publish_timeout, drain_timeout, idle_timeout;
    int wait_go, hold, reconnect, messages;
    long batch_us;
    long first; /* what `{i}` in a path counts from */
} cfg = {.connect_timeout = 60, .publish_timeout = 300, .drain_timeout = 30, .idle_timeout = 5};

static struct conn *conns;
static int epfd;
static long started, ready, failed, ended, complete, in_flight, connected;
static double first_delivery, last_delivery;
static struct counts connect_errors;
static long reconnects, refused, gaps, retry_min, retry_max; /* --reconnect */
static double *value_sent, *value_last; /* per event value: published, last received */
static double *latencies;
static size_t n_latencies, cap_latencies;
static int stdin_lines, stdin_eof;
static char stdin_buf[256];
static size_t stdin_len;

static double now_real(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *must(void *p) {
    if (p == NULL) {
        fprintf(stderr, "sse_clients: out of memory\n");
        exit(2);
    }
    return p;
}

/* ---- reconnects (--reconnect): a min-heap of (due time, stream) ----------------------- */

struct due {
    double at;
    long conn;
};
static struct due *due_heap;
static size_t due_len, due_cap;

static void due_push(double at, long conn) {
    if (due_len == due_cap) {
        due_cap = due_cap ? 2 * due_cap : 1024;
        due_heap = must(realloc(due_heap, due_cap * sizeof *due_heap));
    }
    size_t i = due_len++;
    while (i && due_heap[(i - 1) / 2].at > at) {
        due_heap[i] = due_heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    due_heap[i] = (struct due){at, conn};
}

static struct due due_pop(void) {
    struct due top = due_heap[0], last = due_heap[--due_len];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= due_len) break;
        if (child + 1 < due_len && due_heap[child + 1].at < due_heap[child].at) child++;
        if (due_heap[child].at >= last.at) break;
        due_heap[i] = due_heap[child];
        i = child;
    }
    if (due_len) due_heap[i] = last;
    return top;
}

/* A stream that was live and ended, or a reconnect the server refused: as EventSource does,
 * it comes back after its `retry:`. */
static int comes_back(struct conn *c, const char *error) {
    if (!cfg.reconnect || c->closing || !c->ready) return 0;
    /* a stream this client cannot read is not a server going away: it stays ended */
    if (error != NULL && strncmp(error, "ProtocolError", 13) == 0) return 0;
    return 1;
}

static void end_stream(struct conn *c, const char *error) {
    if (c->state == C_ENDED || c->state == C_IDLE) return;
    int back = comes_back(c, error);
    if (error != NULL && c->error == NULL && !c->closing && !back) c->error = error;
    if (c->fd >= 0) close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    free(c->line);
    c->line = NULL;
    c->line_len = c->line_cap = 0;
    c->kind = M_NONE; /* a message cut by the end is not dispatched, as in a browser */
    c->has_data = c->has_id = c->is_delivery = 0;
    c->id_text_len = c->chunk_line_len = 0;
    if (back) {
        if (c->state == C_CONNECTING || c->state == C_HEAD) refused++;
        c->state = C_IDLE;
        due_push(now_mono() + c->retry_ms / 1000.0, c - conns);
        return;
    }
    if (!c->ready) {
        failed++;
        in_flight--;
    }
    if (c->state == C_HEAD || c->state == C_BODY) ended++;
    c->state = C_ENDED;
}

/* ---- an update's data: just enough JSON to find event.value and event.tags.sent ---- */

/* Skips one JSON value at p; NULL if malformed. Strings honour escapes, so a `}` inside a
 * tag does not end an object. */
static const char *skip_value(const char *p, const char *end) {
    int depth = 0;
    do {
        if (p >= end) return NULL;
        if (*p == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\') p++;
            if (p >= end) return NULL;
            p++;
        } else if (*p == '{' || *p == '[') {
            depth++;
            p++;
        } else if (*p == '}' || *p == ']') {
            if (--depth < 0) return NULL;
            p++;
        } else if (depth > 0 && (*p == ',' || *p == ':')) {
            p++;
        } else {
            const char *start = p;
            while (p < end && strchr(",:{}[]\"", *p) == NULL) p++;
            if (p == start) return NULL;
        }
    } while (depth > 0);
    return p;
}

/* Walks the object at *p, calling on_key for each key (the value starting at *p); on_key
 * returns 1 when it consumed the value, 0 to have it skipped, -1 to stop. */
typedef int (*key_fn)(struct conn *, const char *key, size_t len, const char **p,
                      const char *end);

static int walk_object(struct conn *c, const char **p, const char *end, key_fn on_key) {
    const char *q = *p;
    if (q >= end || *q++ != '{') return -1;
    if (q < end && *q == '}') {
        *p = q + 1;
        return 0;
    }
    for (;;) {
        if (q >= end || *q != '"') return -1;
        const char *key = q + 1;
        const char *key_end = memchr(key, '"', end - key); /* our keys have no escapes */
        if (key_end == NULL || key_end + 1 >= end || key_end[1] != ':') return -1;
        q = key_end + 2;
        int r = on_key(c, key, key_end - key, &q, end);
        if (r < 0) return r;
        if (r == 0 && (q = skip_value(q, end)) == NULL) return -1;
        if (q >= end) return -1;
        if (*q == '}') {
            *p = q + 1;
            return 0;
        }
        if (*q++ != ',') return -1;
    }
}

static int tag_key(struct conn *c, const char *key, size_t len, const char **p,
                   const char *end) {
    if (len != 4 || memcmp(key, "sent", 4) != 0) return 0;
    const char *q = *p;
    if (q >= end || *q != '"') return 0; /* not a time: skipped, the delivery has none */
    char *after;
    double sent = strtod(q + 1, &after); /* the publisher's repr(time.time()) */
    if (after == q + 1 || after >= end || *after != '"') return 0;
    c->sent = sent;
    *p = after + 1;
    return 1;
}

static int event_key(struct conn *c, const char *key, size_t len, const char **p,
                     const char *end) {
    if (len == 5 && memcmp(key, "value", 5) == 0) {
        const char *q = *p;
        char *after;
        double v = strtod(q, &after);
        /* a number whose value is an integer (pushsvc prints 7 as 7.0); 1.5, "1", true or
         * NaN are unexpected values, as bench/loadgen/tally.py judges them */
        int number = after != q && after < end && strchr(",}", *after) != NULL && *q != 'N' &&
                     *q != 'n' && *q != 'I' && *q != 'i';
        c->value = number && v == floor(v) && v >= 0 && v < 1e15 ? (long)v : -1;
        return 0; /* skipped normally: also checks it is one JSON value */
    }
    if (len == 4 && memcmp(key, "tags", 4) == 0) return walk_object(c, p, end, tag_key) < 0 ? -1 : 1;
    return 0;
}

static int update_key(struct conn *c, const char *key, size_t len, const char **p,
                      const char *end) {
    if (len != 5 || memcmp(key, "event", 5) != 0) return 0;
    if (**p == 'n') return 0; /* "event": null is no event */
    c->is_delivery = 1;
    if (walk_object(c, p, end, event_key) < 0) return -1;
    return -2; /* found: the rest (the windows) is not read */
}

/* A stats update's data line: a delivery if it carries the event. */
static const char *read_update(struct conn *c, const char *data, size_t len) {
    const char *p = data;
    c->value = -1;
    c->sent = NAN;
    int r = walk_object(c, &p, data + len, update_key);
    if (r == -1) return "ProtocolError: malformed update data";
    if (c->is_delivery && isnan(c->sent)) return "ProtocolError: delivery without value/tags.sent";
    return NULL;
}

/* --messages: a message's data is the published object itself. */
static const char *read_message(struct conn *c, const char *data, size_t len) {
    const char *p = data;
    c->value = -1;
    c->sent = NAN;
    c->is_delivery = 1;
    if (walk_object(c, &p, data + len, event_key) < 0) return "ProtocolError: malformed message data";
    if (isnan(c->sent)) return "ProtocolError: delivery without value/tags.sent";
    return NULL;
}

/* ---- the event stream, a line at a time -------------------------------------------- */

static int parse_id(const char *v, size_t len, uint64_t out[3]) {
    /* <hex epoch>:<ms>-<seq> */
    char buf[64];
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, v, len);
    buf[len] = 0;
    char *p = buf, *after;
    out[0] = strtoull(p, &after, 16);
    if (after == p || *after != ':') return -1;
    p = after + 1;
    out[1] = strtoull(p, &after, 10);
    if (after == p || *after != '-') return -1;
    p = after + 1;
    out[2] = strtoull(p, &after, 10);
    if (after == p || *after != 0) return -1;
    return 0;
}

static int id_above(const uint64_t a[3], const uint64_t b[3]) {
    for (int i = 0; i < 3; i++)
        if (a[i] != b[i]) return a[i] > b[i];
    return 0;
}

static void delivered(struct conn *c, double now) {
    c->received++;
    if (n_latencies == cap_latencies) {
        cap_latencies = cap_latencies ? 2 * cap_latencies : 1 << 16;
        latencies = must(realloc(latencies, cap_latencies * sizeof *latencies));
    }
    latencies[n_latencies++] = now - c->sent;
    if (!first_delivery) first_delivery = now;
    last_delivery = now;
    if (c->has_id) {
        if (!id_above(c->msg_id, c->last_id)) c->id_regressions++;
        else memcpy(c->last_id, c->msg_id, sizeof c->last_id);
    }
    long v = c->value;
    if (v < 0 || v >= cfg.events) {
        c->unexpected++;
        return;
    }
    if (c->seen[v]) {
        c->duplicates++;
        return;
    }
    c->seen[v] = 1;
    c->distinct++;
    value_sent[v] = c->sent;
    if (now > value_last[v]) value_last[v] = now;
    if (v < c->high) c->out_of_order++;
    else c->high = v;
    if (c->distinct == cfg.events) {
        c->complete = 1;
        c->complete_at = now;
        complete++;
    }
}

/* One line without its LF; an error text, or NULL. */
static const char *sse_line(struct conn *c, const char *line, size_t len, double now) {
    if (len == 0) { /* dispatch */
        if ((c->kind == M_STATS || c->kind == M_MESSAGE) && c->is_delivery) delivered(c, now);
        if (c->id_text_len) { /* as EventSource: the last event ID is set on dispatch */
            memcpy(c->last_event_id, c->id_text, c->id_text_len);
            c->last_event_id_len = c->id_text_len;
        }
        c->id_text_len = 0;
        c->kind = M_NONE;
        c->has_data = c->has_id = c->is_delivery = 0;
        return NULL;
    }
    if (line[0] == ':') return NULL; /* a comment: heartbeats */
    const char *colon = memchr(line, ':', len);
    size_t name_len = colon ? (size_t)(colon - line) : len;
    const char *v = colon ? colon + 1 : line + len;
    if (v < line + len && *v == ' ') v++;
    size_t v_len = line + len - v;
    if (name_len == 5 && memcmp(line, "event", 5) == 0) {
        if (c->has_data) return "ProtocolError: event after data"; /* not what pushsvc sends */
        if (cfg.messages) c->kind = v_len == 3 && memcmp(v, "gap", 3) == 0 ? M_GAP : M_MESSAGE;
        else if (v_len == 5 && memcmp(v, "stats", 5) == 0) c->kind = M_STATS;
        else if (v_len == 8 && memcmp(v, "snapshot", 8) == 0) c->kind = M_SNAPSHOT;
        else return "ProtocolError: unexpected event type";
    } else if (name_len == 4 && memcmp(line, "data", 4) == 0) {
        /* pushsvc's data is one line of JSON: read it now rather than keep it */
        if (c->has_data) return "ProtocolError: more than one data line";
        c->has_data = 1;
        if (cfg.messages && c->kind == M_GAP) {
            c->gaps++;
            gaps++;
            return NULL;
        }
        if (cfg.messages) {
            if (c->kind == M_NONE) c->kind = M_MESSAGE; /* unnamed: EventSource's `message` */
            return read_message(c, v, v_len);
        }
        if (c->kind == M_SNAPSHOT && memmem(v, v_len, "\"gap\":true", 10) != NULL) {
            c->gaps++;
            gaps++;
        }
        if (c->kind == M_SNAPSHOT && !c->ready) {
            c->ready = 1;
            ready++;
            in_flight--;
        } else if (c->kind == M_SNAPSHOT) {
            /* a snapshot on a reconnect: a gap, counted above, or a stream's first priming */
        } else if (c->kind == M_STATS) {
            return read_update(c, v, v_len);
        } else if (c->kind == M_NONE) {
            return "ProtocolError: unexpected event type 'message'";
        }
    } else if (name_len == 2 && memcmp(line, "id", 2) == 0) {
        if (c->has_data) return "ProtocolError: id after data";
        if (v_len && parse_id(v, v_len, c->msg_id) == 0) c->has_id = 1;
        if (v_len < sizeof c->id_text) {
            memcpy(c->id_text, v, v_len);
            c->id_text_len = v_len;
        }
    } else if (name_len == 5 && memcmp(line, "retry", 5) == 0) {
        char digits[16];
        if (v_len && v_len < sizeof digits && strspn(v, "0123456789") >= v_len) {
            memcpy(digits, v, v_len);
            digits[v_len] = 0;
            c->retry_ms = atol(digits);
            if (!retry_min || c->retry_ms < retry_min) retry_min = c->retry_ms;
            if (c->retry_ms > retry_max) retry_max = c->retry_ms;
        }
    }
    return NULL; /* retry and unknown fields: ignored, as a browser does */
}

static int keep_partial(struct conn *c, const char *p, size_t n, size_t max) {
    if (c->line_len + n > max) return -1;
    if (c->line_len + n > c->line_cap) {
        c->line_cap = c->line_len + n > 512 ? 2 * (c->line_len + n) : 512;
        c->line = must(realloc(c->line, c->line_cap));
    }
    memcpy(c->line + c->line_len, p, n);
    c->line_len += n;
    return 0;
}

/* Payload bytes: split at LF; a line cut across reads is kept until its end arrives. */
static const char *sse_bytes(struct conn *c, const char *p, size_t n, double now) {
    const char *end = p + n;
    if (memchr(p, '\r', n)) return "ProtocolError: a CR in the event stream";
    while (p < end) {
        const char *lf = memchr(p, '\n', end - p);
        if (lf == NULL) {
            if (keep_partial(c, p, end - p, MAX_LINE) < 0) return "ProtocolError: line too long";
            return NULL;
        }
        const char *error;
        if (c->line_len) {
            if (keep_partial(c, p, lf - p, MAX_LINE) < 0) return "ProtocolError: line too long";
            error = sse_line(c, c->line, c->line_len, now);
            c->line_len = 0;
        } else {
            error = sse_line(c, p, lf - p, now);
        }
        if (error) return error;
        p = lf + 1;
    }
    return NULL;
}

/* ---- HTTP/1.1: the head, then a chunked or close-delimited body ---------------------- */

static int header_is(const char *line, size_t len, const char *name) {
    size_t n = strlen(name);
    return len > n && line[n] == ':' && strncasecmp(line, name, n) == 0;
}

static const char *header_value(const char *line, size_t len, size_t *v_len) {
    const char *v = memchr(line, ':', len) + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
    *v_len = end - v;
    return v;
}

static const char *parse_head(struct conn *c, const char *head, size_t len) {
    const char *end = head + len;
    if (len < 12 || memcmp(head, "HTTP/1.", 7) != 0 || (head[7] != '0' && head[7] != '1') ||
        head[8] != ' ')
        return "ProtocolError: bad status line";
    if (memcmp(head + 9, "200", 3) != 0) return "ProtocolError: status not 200";
    int event_stream = 0;
    for (const char *p = memchr(head, '\n', len); p && p + 1 < end;) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\r', end - line);
        if (eol == NULL) eol = end;
        size_t n = eol - line, v_len;
        if (memchr(line, ':', n) == NULL) return "ProtocolError: bad header line";
        const char *v = header_value(line, n, &v_len);
        if (header_is(line, n, "content-type"))
            event_stream = v_len >= 17 && strncasecmp(v, "text/event-stream", 17) == 0 &&
                           (v_len == 17 || v[17] == ';' || v[17] == ' ');
        else if (header_is(line, n, "transfer-encoding"))
            c->chunked = v_len >= 7 && strncasecmp(v + v_len - 7, "chunked", 7) == 0;
        else if (header_is(line, n, "content-length"))
            return "ProtocolError: an event stream with a Content-Length";
        p = eol + 1 < end ? eol + 1 : NULL;
    }
    if (!event_stream) return "ProtocolError: not text/event-stream";
    c->chunk = K_SIZE;
    return NULL;
}

/* A chunk-size line, the CRLF after a chunk, or a trailer line (without its CRLF). */
static const char *read_chunk_line(struct conn *c, const char *line, size_t len) {
    if (c->chunk == K_CRLF) {
        if (len) return "ProtocolError: chunk not followed by CRLF";
        c->chunk = K_SIZE;
    } else if (c->chunk == K_SIZE) {
        char *after;
        if (len == 0) return "ProtocolError: bad chunk size line";
        unsigned long long size = strtoull(line, &after, 16);
        if (after == line || (after < line + len && *after != ';' && *after != ' ' && *after != '\t'))
            return "ProtocolError: bad chunk size line";
        c->chunk_left = size;
        c->chunk = size ? K_DATA : K_TRAILER;
    } else if (c->chunk == K_TRAILER && len == 0) {
        c->chunk = K_END;
    }
    return NULL;
}

/* The body: payload bytes go to the event stream as they come, uncopied; chunk framing
 * lines are kept apart (in chunk_line), since a chunk need not end where a line does. */
static const char *body_bytes(struct conn *c, const char *p, size_t n, double now) {
    if (!c->chunked) return sse_bytes(c, p, n, now);
    const char *end = p + n;
    while (p < end) {
        if (c->chunk == K_DATA) {
            size_t take = (size_t)(end - p) < c->chunk_left ? (size_t)(end - p) : c->chunk_left;
            const char *error = sse_bytes(c, p, take, now);
            if (error) return error;
            p += take;
            if (!(c->chunk_left -= take)) c->chunk = K_CRLF;
        } else if (c->chunk == K_END) {
            return "ProtocolError: bytes after the last chunk";
        } else {
            const char *lf = memchr(p, '\n', end - p);
            size_t take = (lf ? lf : end) - p;
            if (c->chunk_line_len + take > sizeof c->chunk_line)
                return "ProtocolError: chunk line too long";
            memcpy(c->chunk_line + c->chunk_line_len, p, take);
            c->chunk_line_len += take;
            if (lf == NULL) return NULL;
            p = lf + 1;
            size_t len = c->chunk_line_len;
            c->chunk_line_len = 0;
            if (len == 0 || c->chunk_line[len - 1] != '\r')
                return "ProtocolError: a chunk line not ended by CRLF";
            const char *error = read_chunk_line(c, c->chunk_line, len - 1);
            if (error) return error;
        }
    }
    return NULL;
}

static void on_readable(struct conn *c, char *buf) {
    ssize_t n = read(c->fd, buf, READ_SIZE);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        end_stream(c, errno == ECONNRESET ? "closed by the server" : "read error");
        return;
    }
    if (n == 0) { /* before the head: the server gave up on the request (its header timeout) */
        end_stream(c, c->state == C_HEAD ? "closed by the server before the response head"
                                          : "closed by the server");
        return;
    }
    c->bytes += n;
    double now = now_real();
    const char *p = buf, *error = NULL;
    size_t left = n;
    if (c->state == C_HEAD) {
        /* The read may hold the body's start too (a resumed stream's replay comes with its
         * head): the limit is on the head, not on the read. */
        if (keep_partial(c, p, left, MAX_HEAD + READ_SIZE) < 0) {
            end_stream(c, "ProtocolError: response head too large");
            return;
        }
        char *head_end = memmem(c->line, c->line_len, "\r\n\r\n", 4);
        if ((head_end ? (size_t)(head_end - c->line) : c->line_len) > MAX_HEAD) {
            end_stream(c, "ProtocolError: response head too large");
            return;
        }
        if (head_end == NULL) return;
        size_t head_len = head_end - c->line, rest = c->line_len - head_len - 4;
        error = parse_head(c, c->line, head_len);
        if (error == NULL) {
            /* the body bytes after the head, out of the head buffer before it is reused */
            memmove(buf, head_end + 4, rest);
            c->line_len = 0;
            c->state = C_BODY;
            if (c->reconnects) c->back_at = now;
            if (cfg.messages && !c->ready) { /* the head is the stream's start */
                c->ready = 1;
                ready++;
                in_flight--;
            }
            p = buf;
            left = rest;
        }
    }
    if (error == NULL && c->state == C_BODY && left) error = body_bytes(c, p, left, now);
    if (error) end_stream(c, error);
}

/* ---- connecting ---------------------------------------------------------------------- */

/* Opens c's connection; an error text, or NULL. */
static const char *open_conn(struct conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return strerror(errno);
    c->fd = fd;
    if (cfg.source) {
        /* Let connect() pick the port for the whole 4-tuple, not bind() for the address
         * alone: the same port may then serve several server addresses. */
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in local = {.sin_family = AF_INET};
        inet_pton(AF_INET, cfg.source, &local.sin_addr);
        if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) return strerror(errno);
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(cfg.port[c->url])};
    inet_pton(AF_INET, cfg.host[c->url], &to.sin_addr);
    if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS)
        return strerror(errno);
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = c - conns};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    c->state = C_CONNECTING;
    c->chunked = 0;
    return NULL;
}

static void start_one(void) {
    struct conn *c = &conns[started];
    c->url = started % cfg.urls;
    started++;
    in_flight++;
    const char *why = open_conn(c);
    if (why == NULL) return;
    char key[128];
    snprintf(key, sizeof key, "OSError: %s", why);
    count_key(&connect_errors, key);
    c->closing = 1; /* a connect error, not a stream error */
    end_stream(c, NULL);
}

/* --reconnect: the streams whose `retry:` has passed come back, with Last-Event-ID. */
static void reconnect_due(void) {
    double now = now_mono();
    while (due_len && due_heap[0].at <= now) {
        struct conn *c = &conns[due_pop().conn];
        c->reconnects++;
        reconnects++;
        if (open_conn(c) == NULL) continue;
        if (c->fd >= 0) close(c->fd);
        c->fd = -1;
        refused++;
        due_push(now + c->retry_ms / 1000.0, c - conns);
    }
}

static void on_connected(struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    const char *request = cfg.request[c->url];
    char numbered[sizeof cfg.request[0] + 24];
    const char *mark = strstr(request, "{i}");
    if (mark) { /* this stream's own channel */
        snprintf(numbered, sizeof numbered, "%.*s%ld%s", (int)(mark - request), request,
                 cfg.first + (long)(c - conns), mark + 3);
        request = numbered;
    }
    char resume[sizeof numbered + sizeof c->last_event_id + 32];
    if (c->last_event_id_len) { /* the request's head, Last-Event-ID before its blank line */
        size_t head = strlen(request) - 2;
        snprintf(resume, sizeof resume, "%.*sLast-Event-ID: %.*s\r\n\r\n", (int)head, request,
                 (int)c->last_event_id_len, c->last_event_id);
        request = resume;
    }
    size_t n = strlen(request);
    if (err == 0 && write(c->fd, request, n) != (ssize_t)n) err = errno ? errno : EIO;
    if (err) {
        if (c->ready && cfg.reconnect) { /* refused while the server is down: again later */
            end_stream(c, "refused");
            return;
        }
        char key[128];
        snprintf(key, sizeof key, "OSError: %s", strerror(err));
        count_key(&connect_errors, key);
        c->closing = 1;
        end_stream(c, NULL);
        return;
    }
    if (!c->reconnects) connected++;
    c->state = C_HEAD;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = c - conns};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* ---- the loop ------------------------------------------------------------------------ */

static void on_stdin(void) {
    ssize_t n = read(0, stdin_buf + stdin_len, sizeof stdin_buf - stdin_len);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        stdin_eof = 1;
        epoll_ctl(epfd, EPOLL_CTL_DEL, 0, NULL);
        return;
    }
    stdin_len += n;
    for (char *lf; (lf = memchr(stdin_buf, '\n', stdin_len)) != NULL;) {
        stdin_lines++;
        stdin_len -= lf + 1 - stdin_buf;
        memmove(stdin_buf, lf + 1, stdin_len);
    }
    if (stdin_len == sizeof stdin_buf) stdin_len = 0; /* a line that long is one line */
}

static int connecting; /* start streams while the connect phase lasts */

/* Runs the loop until done() holds, `timeout` seconds pass, or (with `idle`) no delivery
 * arrived for `idle` seconds. */
static void run_until(int (*done)(void), double timeout, double idle) {
    static char buf[READ_SIZE];
    static struct epoll_event events[1024];
    double deadline = now_mono() + timeout;
    while (!done()) {
        while (connecting && started < cfg.subscribers && in_flight < CONNECTING_AT_ONCE)
            start_one();
        if (due_len) reconnect_due();
        double now = now_mono(), left = deadline - now;
        if (idle > 0) {
            double quiet = last_delivery + idle - now_real();
            if (quiet < left) left = quiet;
        }
        if (left <= 0) return;
        if (due_len && due_heap[0].at - now < left) /* wake for the next reconnect */
            left = due_heap[0].at > now ? due_heap[0].at - now : 0;
        int n = epoll_wait(epfd, events, 1024, left > 0.1 ? 100 : (int)(left * 1000) + 1);
        for (int i = 0; i < n; i++) {
            if (events[i].data.u64 == STDIN_TAG) {
                on_stdin();
                continue;
            }
            struct conn *c = &conns[events[i].data.u64];
            if (c->state == C_CONNECTING) on_connected(c);
            else if (c->state == C_HEAD || c->state == C_BODY) on_readable(c, buf);
        }
        /* A reader that blocks in epoll_wait again at once is woken by nearly every send, and
         * on loopback the sender pays for the wake-up: pausing --batch-us after a short batch
         * lets a broadcast's sends find no one to wake, and read many streams per wait. */
        if (cfg.batch_us && n < 1024) {
            struct timespec pause = {0, cfg.batch_us * 1000};
            nanosleep(&pause, NULL);
        }
    }
}

static int all_opened(void) { return ready + failed >= cfg.subscribers; }
static int lines_wanted, lines_taken;
static int got_line(void) { return stdin_eof || stdin_lines >= lines_wanted; }
static int all_done(void) { return complete >= connected || ended >= connected; }

/* The next line on stdin (lines queue up: "go" and "published" may come in one read). */
static void wait_line(double timeout) {
    lines_wanted = lines_taken + 1;
    run_until(got_line, timeout, 0);
    if (stdin_lines >= lines_wanted) lines_taken++;
}

/* ---- records ------------------------------------------------------------------------- */

static void print_counts(const char *name, struct counts *c) {
    printf("\"%s\":{", name);
    for (int i = 0; i < c->used; i++) printf("%s\"%s\":%ld", i ? "," : "", c->key[i], c->n[i]);
    printf("}");
}

static void print_time(const char *name, double t) {
    if (t) printf(",\"%s\":%.6f", name, t);
    else printf(",\"%s\":null", name);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double nearest_rank(double q) {
    size_t rank = (size_t)ceil(q * n_latencies);
    if (rank < 1) rank = 1;
    if (rank > n_latencies) rank = n_latencies;
    return latencies[rank - 1];
}

static void usage(void) {
    fprintf(stderr,
            "usage: sse_clients --stream URL [--stream URL ...] --subscribers N --events M\n"
            "  [--source ADDRESS] [--connect-timeout S] [--publish-timeout S]\n"
            "  [--drain-timeout S] [--idle-timeout S] [--batch-us US] [--wait-go] [--hold]\n"
            "  [--reconnect] [--messages] [--first N]\n");
    exit(2);
}

static void add_url(const char *url) {
    char host[64], path[400];
    int port = 80;
    if (cfg.urls == MAX_URLS) usage();
    if (sscanf(url, "http://%63[0-9.]:%d%399s", host, &port, path) != 3 &&
        (port = 80, sscanf(url, "http://%63[0-9.]%399s", host, path) != 2)) {
        fprintf(stderr, "sse_clients: %s: only http://<IPv4>[:port]/path URLs\n", url);
        exit(2);
    }
    int i = cfg.urls++;
    snprintf(cfg.host[i], sizeof cfg.host[i], "%s", host);
    cfg.port[i] = port;
    snprintf(cfg.request[i], sizeof cfg.request[i],
             "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
             "Cache-Control: no-store\r\n\r\n",
             path, host, port);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--wait-go") == 0) cfg.wait_go = 1;
        else if (strcmp(a, "--hold") == 0) cfg.hold = 1;
        else if (strcmp(a, "--reconnect") == 0) cfg.reconnect = 1;
        else if (strcmp(a, "--messages") == 0) cfg.messages = 1;
        else if (v == NULL) usage();
        else if (strcmp(a, "--stream") == 0) add_url(v), i++;
        else if (strcmp(a, "--subscribers") == 0) cfg.subscribers = atol(v), i++;
        else if (strcmp(a, "--events") == 0) cfg.events = atol(v), i++;
        else if (strcmp(a, "--source") == 0) cfg.source = v, i++;
        else if (strcmp(a, "--connect-timeout") == 0) cfg.connect_timeout = atof(v), i++;
        else if (strcmp(a, "--publish-timeout") == 0) cfg.publish_timeout = atof(v), i++;
        else if (strcmp(a, "--drain-timeout") == 0) cfg.drain_timeout = atof(v), i++;
        else if (strcmp(a, "--idle-timeout") == 0) cfg.idle_timeout = atof(v), i++;
        else if (strcmp(a, "--first") == 0) cfg.first = atol(v), i++;
        else if (strcmp(a, "--batch-us") == 0) cfg.batch_us = atol(v) % 1000000, i++;
        else usage();
    }
    if (cfg.urls == 0 || cfg.subscribers < 0 || cfg.events < 1) usage();

    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max; /* 18,000 sockets need it */
    setrlimit(RLIMIT_NOFILE, &limit);

    conns = must(calloc(cfg.subscribers + 1, sizeof *conns));
    unsigned char *seen = must(calloc((size_t)cfg.subscribers * cfg.events + 1, 1));
    for (long i = 0; i < cfg.subscribers; i++) {
        conns[i].fd = -1;
        conns[i].high = -1;
        conns[i].seen = seen + i * cfg.events;
        conns[i].retry_ms = 3000; /* EventSource's default until the server sends `retry:` */
    }
    value_sent = must(calloc(cfg.events, sizeof *value_sent));
    value_last = must(calloc(cfg.events, sizeof *value_last));
    epfd = epoll_create1(EPOLL_CLOEXEC);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STDIN_TAG};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev) < 0) stdin_eof = 1; /* /dev/null: no lines */

    connecting = 1;
    run_until(all_opened, cfg.connect_timeout, 0);
    connecting = 0;
    printf("{\"phase\":\"opened\",\"opened\":%ld,\"ready\":%ld,", connected, ready);
    print_counts("connect_errors", &connect_errors);
    printf("}\n");
    fflush(stdout);

    if (cfg.wait_go) wait_line(cfg.publish_timeout + cfg.connect_timeout); /* "go" */
    wait_line(cfg.publish_timeout); /* "published": the driver's publisher is done */
    if (last_delivery < now_real()) last_delivery = now_real();
    run_until(all_done, cfg.drain_timeout, cfg.idle_timeout);
    double drained_at = now_real();

    struct counts stream_errors = {0};
    double all_complete_at = 0, last_back_at = 0;
    long bytes = 0, down = 0;
    for (long i = 0; i < cfg.subscribers; i++) {
        struct conn *c = &conns[i];
        bytes += c->bytes;
        if (c->back_at > last_back_at) last_back_at = c->back_at;
        if (c->state == C_IDLE) down++;
        if (c->error) count_key(&stream_errors, c->error);
        if (c->complete && c->complete_at > all_complete_at) all_complete_at = c->complete_at;
    }
    printf("{\"phase\":\"drained\",\"drained_at\":%.6f,\"connected\":%ld,", drained_at, connected);
    print_counts("connect_errors", &connect_errors);
    printf(",\"ready\":%ld,\"complete\":%ld", ready, complete);
    print_time("all_complete_at", complete == cfg.subscribers ? all_complete_at : 0);
    print_time("first_delivery_at", first_delivery);
    print_time("last_delivery_at", last_delivery);
    printf(",\"bytes\":%ld,", bytes);
    print_counts("stream_errors", &stream_errors);
    if (cfg.reconnect) {
        printf(",\"reconnects\":%ld,\"refused\":%ld,\"down\":%ld,\"gaps\":%ld", reconnects,
               refused, down, gaps);
        printf(",\"retry_ms\":[%ld,%ld]", retry_min, retry_max);
        print_time("last_back_at", last_back_at);
        printf(",\"values\":[");
        for (long v = 0; v < cfg.events; v++)
            printf("%s[%.6f,%.6f]", v ? "," : "", value_sent[v], value_last[v]);
        printf("]");
    }
    printf("}\n");
    fflush(stdout);

    if (cfg.hold) wait_line(60); /* "measured" */
    for (long i = 0; i < cfg.subscribers; i++) {
        conns[i].closing = 1;
        end_stream(&conns[i], NULL);
    }

    long received = 0, distinct = 0, duplicates = 0, out_of_order = 0, unexpected = 0;
    long id_regressions = 0;
    for (long i = 0; i < cfg.subscribers; i++) {
        struct conn *c = &conns[i];
        received += c->received;
        distinct += c->distinct;
        duplicates += c->duplicates;
        out_of_order += c->out_of_order;
        unexpected += c->unexpected;
        id_regressions += c->id_regressions;
    }
    long expected = cfg.subscribers * cfg.events;
    printf("{\"phase\":\"result\",\"kind\":\"%s\",\"mode\":\"deliveries\",\"client\":\"c\","
           "\"subscribers\":%ld,\"events\":%ld,\"expected\":%ld,\"received\":%ld,"
           "\"distinct\":%ld,\"duplicates\":%ld,\"out_of_order\":%ld,\"missing\":%ld,"
           "\"unexpected\":%ld,\"id_regressions\":%ld,\"latency_ms\":",
           cfg.messages ? "messages" : "pushsvc", cfg.subscribers, cfg.events, expected, received, distinct, duplicates,
           out_of_order, expected - distinct, unexpected, id_regressions);
    if (n_latencies) {
        qsort(latencies, n_latencies, sizeof *latencies, by_value);
        printf("{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
               1000 * nearest_rank(0.5), 1000 * nearest_rank(0.9), 1000 * nearest_rank(0.99),
               1000 * nearest_rank(1.0));
    } else {
        printf("{\"p50\":null,\"p90\":null,\"p99\":null,\"max\":null}}\n");
    }
    fflush(stdout);
    return 0;
}
