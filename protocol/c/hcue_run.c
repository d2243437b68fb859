/*
 * hcue-run: run a HandCue step table with the C reference library and print
 * its motor events as JSON lines, one per motor-on segment, in the shape of
 * `handcue inspect --timeline --json` (same fields, same order, json.dumps
 * spacing).  A host tool: unlike the library it uses stdio and malloc.
 *
 *   hcue-run TABLE                  start at band time 0, run to the end
 *   hcue-run --strength N ...       any run above at cue strength N % (20..100)
 *   hcue-run --script CMDS TABLE    the same, with timed commands (see below)
 *   hcue-run --batch                many tables (and scripts) from stdin
 *   hcue-run --batch-check          many tables from stdin: validate only
 *   hcue-run --sizeof               print sizeof(hc_player)
 *   hcue-run --frames               bytes from stdin through the frame receiver:
 *                                   "MSG hex respond status opcode id" per
 *                                   message, then "STATS frames bad_crc bad_cobs oversized"
 *   hcue-run --encode               stdin (one message) as a frame, in hex
 *
 * A rejected table: exit 1 and its TableError name (BAD_CRC, ...) on stderr.
 *
 * Script (CMDS): one command per line, "T COMMAND", T = band time in ms since
 * hcue-run started the table (non-decreasing), COMMAND one of start, pause,
 * resume, skip (to the next iteration), skip-step (past the step), stop,
 * ack (the button pressed while a cue waits for an acknowledgement), status.  '#' starts a comment.  Before a command at T
 * everything due at or before T plays.  `status` prints one JSON line
 * {"at_ms": T, "state": ..., ..., "cues": N, "ack_wait": ...} (the STATUS
 * fields, battery left out, as StatusReport.to_json()); a command the band refuses prints
 * {"at_ms": T, "command": "pause", "refused": "BAD_STATE"}.  After the last
 * command the band runs until nothing more is due.
 *
 * Batch input: repeated [u32 LE table length][table][u32 LE script length]
 * [script]; each table's output (its JSON lines, or "!NAME" for a rejected
 * table; for --batch-check just the name, OK when accepted) ends with "%%".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handcue.h"
#include "handcue_frame.h"

static const char *const TECHNIQUES[] = {NULL, "warm_up", "joystick", "acupressure", "acupressure:PC6",
                                         "acupressure:LI4", "flex_extend", "finger_squeeze", "key_grip",
                                         "doorknob", "handshake", "palm_spread", "combing"};
static const char *const HANDS[] = {NULL, "left", "right"};
static const char *const FINGERS[] = {NULL, "thumb", "index", "middle", "ring", "little"};
static const char *const STATES[] = {"idle", "running", "paused", "finished", "waiting"};

/* State of the drive() self-check (on_drive below). */
static unsigned last_level;
static unsigned long long level_since, drive_energy, segment_energy;
static int drive_errors;

static void json_string(const char *s)
{
    if (s == NULL) {
        fputs("null", stdout);
    } else {
        printf("\"%s\"", s);
    }
}

static void on_segment(void *ctx, const hc_segment *s)
{
    (void)ctx;
    segment_energy += (unsigned long long)s->amplitude * s->duration_ms;
    printf("{\"t_ms\": %llu, \"amplitude\": %u, \"duration_ms\": %lu, \"cue\": \"%s\", \"pattern\": %u, \"step\": ",
           (unsigned long long)s->t_ms, s->amplitude, (unsigned long)s->duration_ms, hc_cue_name(s->cue), s->pattern);
    if (s->step == HC_NO_STEP) {
        fputs("null", stdout);
    } else {
        printf("%u", s->step);
    }
    fputs(", \"hand\": ", stdout);
    json_string(HANDS[s->hand]);
    fputs(", \"finger\": ", stdout);
    json_string(FINGERS[s->finger]);
    fputs("}\n", stdout);
}

/* Self-check of the drive() contract: the level changes on every call, the
 * motor is never driven while paused or idle, and the drive levels integrated
 * over routine time equal the reported segments (amplitude x duration). */

static void on_drive(void *ctx, uint8_t level)
{
    const hc_player *p = ctx;
    if (level == last_level || level > 100u) drive_errors++;
    if (level != 0u && (p->state == HC_PAUSED || p->state == HC_IDLE)) drive_errors++;
    if (last_level != 0u) drive_energy += last_level * (p->now - level_since);
    level_since = p->now;
    last_level = level;
}

static void print_status(const hc_player *p, unsigned long at)
{
    hc_status st;
    hc_get_status(p, &st);
    printf("{\"at_ms\": %lu, \"state\": \"%s\", \"step\": ", at, STATES[st.state]);
    if (st.step == HC_NO_STEP) {
        fputs("null", stdout);
    } else {
        printf("%u", st.step);
    }
    fputs(", \"technique\": ", stdout);
    json_string(st.technique <= 12u ? TECHNIQUES[st.technique] : NULL);
    printf(", \"iteration\": %u, \"hand\": ", st.iteration);
    json_string(HANDS[st.hand]);
    fputs(", \"finger\": ", stdout);
    json_string(FINGERS[st.finger]);
    printf(", \"elapsed_ms\": %lu, \"remaining_ms\": %lu, \"step_remaining_ms\": %lu, \"total_ms\": %lu, \"last_cue\": ",
           (unsigned long)st.elapsed_ms, (unsigned long)st.remaining_ms, (unsigned long)st.step_remaining_ms,
           (unsigned long)st.total_ms);
    json_string(st.last_cue ? hc_cue_name(st.last_cue) : NULL);
    printf(", \"cues\": %u, \"ack_wait\": ", st.cues);
    if (st.state == HC_WAITING) {
        printf("{\"cue\": \"%s\", \"gives_up_in_ms\": %lu}}\n", hc_cue_name(st.ack_cue), (unsigned long)st.step_remaining_ms);
    } else {
        fputs("null}\n", stdout);
    }
}

/* Advance band time from *now to t in hc_tick calls of at most UINT32_MAX. */
static void run_until(hc_player *p, unsigned long long *now, unsigned long long t)
{
    while (*now < t) {
        unsigned long long step = t - *now;
        if (step > 0xFFFFFFFFull) step = 0xFFFFFFFFull;
        hc_tick(p, (uint32_t)step);
        *now += step;
    }
}

static int run_script(hc_player *p, const char *script, size_t length)
{
    unsigned long long now = 0;
    size_t at = 0;
    hc_start(p);
    while (at < length) {
        char line[128], command[16];
        unsigned long long t;
        size_t n = 0;
        while (at < length && script[at] != '\n') {
            if (n + 1 < sizeof line) line[n++] = script[at];
            at++;
        }
        at++;
        line[n] = '\0';
        if (strchr(line, '#')) *strchr(line, '#') = '\0';
        if (sscanf(line, "%llu %15s", &t, command) != 2) {
            if (strspn(line, " \t\r") == strlen(line)) continue;
            fprintf(stderr, "hcue-run: bad script line: %s\n", line);
            return 2;
        }
        if (t < now) {
            fprintf(stderr, "hcue-run: script goes back in time at: %s\n", line);
            return 2;
        }
        run_until(p, &now, t);
        {
            hc_status_code code;
            if (strcmp(command, "start") == 0) {
                code = hc_start(p);
            } else if (strcmp(command, "pause") == 0) {
                code = hc_pause(p);
            } else if (strcmp(command, "resume") == 0) {
                code = hc_resume(p);
            } else if (strcmp(command, "skip") == 0) {
                code = hc_skip(p, HC_SKIP_ITERATION);
            } else if (strcmp(command, "skip-step") == 0) {
                code = hc_skip(p, HC_SKIP_STEP);
            } else if (strcmp(command, "stop") == 0) {
                code = hc_stop(p);
            } else if (strcmp(command, "ack") == 0) {
                code = hc_ack(p);
            } else if (strcmp(command, "status") == 0) {
                print_status(p, (unsigned long)t);
                continue;
            } else {
                fprintf(stderr, "hcue-run: unknown command: %s\n", command);
                return 2;
            }
            if (code != HC_STATUS_OK) {
                printf("{\"at_ms\": %llu, \"command\": \"%s\", \"refused\": \"%s\"}\n", t, command,
                       code == HC_STATUS_BAD_STATE ? "BAD_STATE" : "NO_ROUTINE");
            }
        }
    }
    for (;;) { /* to the end: until nothing more is due */
        uint32_t wait = hc_ms_until_due(p);
        if (wait == UINT32_MAX) break;
        run_until(p, &now, now + wait);
    }
    return 0;
}

/* Load and run one table; returns the TableError (printed by the caller). */
static unsigned strength = HC_MAX_STRENGTH;

static hc_table_error run_one(const uint8_t *table, size_t length, const char *script, size_t script_length, int *rc)
{
    static hc_player player;
    hc_callbacks cb;
    hc_table_error error;
    cb.drive = on_drive;
    cb.segment = on_segment;
    cb.cue = NULL;
    cb.ctx = &player;
    error = hc_load(&player, table, length, &cb);
    if (error != HC_OK) return error;
    (void)hc_set_strength(&player, (uint8_t)strength); /* checked in main */
    last_level = 0;
    drive_energy = segment_energy = 0;
    *rc = run_script(&player, script, script_length);
    if (last_level != 0u || drive_energy != segment_energy) drive_errors++;
    if (drive_errors) {
        fprintf(stderr, "hcue-run: drive() calls disagree with the motor segments (%d faults)\n", drive_errors);
        *rc = 3;
    }
    return HC_OK;
}

static unsigned char *read_all(FILE *f, size_t *length)
{
    size_t size = 4096, n = 0;
    unsigned char *data = malloc(size);
    while (data) {
        size_t got = fread(data + n, 1, size - n, f);
        n += got;
        if (n < size) break;
        size *= 2;
        {
            unsigned char *bigger = realloc(data, size);
            if (!bigger) free(data);
            data = bigger;
        }
    }
    *length = n;
    return data;
}

static int read_exact(FILE *f, unsigned char *buffer, size_t n) { return fread(buffer, 1, n, f) == n; }

static int batch(int check_only)
{
    unsigned char head[4];
    while (read_exact(stdin, head, 4)) {
        size_t length = (size_t)head[0] | ((size_t)head[1] << 8) | ((size_t)head[2] << 16) | ((size_t)head[3] << 24);
        size_t script_length;
        unsigned char *table = malloc(length ? length : 1);
        char *script;
        int rc = 0;
        hc_table_error error;
        if (!table || !read_exact(stdin, table, length) || !read_exact(stdin, head, 4)) return 2;
        script_length = (size_t)head[0] | ((size_t)head[1] << 8) | ((size_t)head[2] << 16) | ((size_t)head[3] << 24);
        script = malloc(script_length ? script_length : 1);
        if (!script || !read_exact(stdin, (unsigned char *)script, script_length)) return 2;
        if (check_only) {
            puts(hc_table_error_name(hc_validate(table, length)));
        } else {
            error = run_one(table, length, script, script_length, &rc);
            if (error != HC_OK) printf("!%s\n", hc_table_error_name(error));
            if (rc != 0) return rc;
        }
        puts("%%");
        free(table);
        free(script);
    }
    return 0;
}

static int frames(void)
{
    static hc_frame_rx rx;
    size_t length, i;
    unsigned char *data = read_all(stdin, &length);
    if (!data) return 2;
    hc_frame_rx_init(&rx);
    for (i = 0; i < length; i++) {
        const uint8_t *message;
        int n = hc_frame_rx_byte(&rx, data[i], &message);
        if (n >= 0) {
            hc_request_check check = hc_check_request(message, (size_t)n);
            int k;
            fputs("MSG ", stdout);
            for (k = 0; k < n; k++) printf("%02x", message[k]);
            printf(" %d %u %u %u\n", check.respond, check.status, check.opcode, check.request_id);
        }
    }
    printf("STATS %lu %lu %lu %lu\n", (unsigned long)rx.stats.frames, (unsigned long)rx.stats.bad_crc,
           (unsigned long)rx.stats.bad_cobs, (unsigned long)rx.stats.oversized);
    free(data);
    return 0;
}

static int encode(void)
{
    size_t length, n, i;
    unsigned char *data = read_all(stdin, &length), *out;
    if (!data || !(out = malloc(length + length / 254u + 8u))) return 2;
    n = hc_frame_encode(data, length, out, length + length / 254u + 8u);
    for (i = 0; i < n; i++) printf("%02x", out[i]);
    putchar('\n');
    free(out);
    free(data);
    return n ? 0 : 2;
}

int main(int argc, char **argv)
{
    const char *script_path = NULL, *table_path;
    unsigned char *table, *script = NULL;
    size_t length, script_length = 0;
    hc_table_error error;
    int rc = 0;
    FILE *f;
    if (argc >= 3 && strcmp(argv[1], "--strength") == 0) {
        char *end;
        unsigned long value = strtoul(argv[2], &end, 10);
        if (*end || value < HC_MIN_STRENGTH || value > HC_MAX_STRENGTH) {
            fputs("hcue-run: --strength takes 20 to 100\n", stderr);
            return 2;
        }
        strength = (unsigned)value;
        argv[2] = argv[0];
        argv += 2;
        argc -= 2;
    }
    if (argc == 2 && strcmp(argv[1], "--sizeof") == 0) {
        printf("%lu\n", (unsigned long)sizeof(hc_player));
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--batch") == 0) return batch(0);
    if (argc == 2 && strcmp(argv[1], "--batch-check") == 0) return batch(1);
    if (argc == 2 && strcmp(argv[1], "--frames") == 0) return frames();
    if (argc == 2 && strcmp(argv[1], "--encode") == 0) return encode();
    if (argc == 4 && strcmp(argv[1], "--script") == 0) {
        script_path = argv[2];
    } else if (argc != 2 || argv[1][0] == '-') {
        fputs("usage: hcue-run [--strength N] [--script CMDS] TABLE | --batch | --batch-check | --frames | --encode | --sizeof\n", stderr);
        return 2;
    }
    table_path = argv[argc - 1];
    if (script_path) {
        f = fopen(script_path, "rb");
        if (!f) {
            perror(script_path);
            return 2;
        }
        script = read_all(f, &script_length);
        fclose(f);
    }
    f = fopen(table_path, "rb");
    if (!f) {
        perror(table_path);
        return 2;
    }
    table = read_all(f, &length);
    fclose(f);
    if (!table || (script_path && !script)) return 2;
    error = run_one(table, length, script ? (const char *)script : "", script_length, &rc);
    if (error != HC_OK) {
        fprintf(stderr, "%s\n", hc_table_error_name(error));
        return 1;
    }
    free(table);
    free(script);
    return rc;
}
