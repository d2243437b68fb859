/*
 * handcue.c - HandCue step-table loader and interpreter, C99 reference.
 * See handcue.h for the API and protocol/SPEC.md for the rules; section
 * numbers below refer to SPEC.md.
 */
#include "handcue.h"

#include <string.h>

/* sizeof(hc_player) <= HC_PLAYER_MAX_BYTES, checked at compile time. */
typedef char hc_player_fits[(sizeof(hc_player) <= HC_PLAYER_MAX_BYTES) ? 1 : -1];

#define HC_NEVER UINT64_MAX
#define TIME_UNIT_MS 100u
#define SEGMENT_UNIT_MS 10u
#define MAX_COUNT 255u
#define MIN_STEP_UNITS 10u    /* MIN_STEP_MS / TIME_UNIT_MS */
#define MAX_SEGMENTS_PER_PATTERN 8u
#define MIN_PULSE_UNITS 3u    /* MIN_PULSE_MS / SEGMENT_UNIT_MS */
#define MIN_GAP_UNITS 10u     /* MIN_GAP_MS / SEGMENT_UNIT_MS */
#define MAX_PATTERN_UNITS 100u /* MAX_PATTERN_MS / SEGMENT_UNIT_MS */
#define MAX_AMPLITUDE 100u
#define MAX_NAME_BYTES 64u
#define MAX_TECHNIQUE 12u
#define FLAG_NAMES 0x01u
#define FLAG_ACK_DONE 0x02u   /* format 2: the finish waits for an acknowledgement */
#define STEP_FLAG_ACK 0x01u   /* format 2, STEP byte 14: the step waits after its START cue */
#define KIND_STEP 1u
#define KIND_LOOP 2u
#define ITERATE_NONE 0u
#define ITERATE_FINGER 1u
#define ITERATE_HAND 2u
#define TOTAL_CAP 0x100000000ull /* totals saturate here: anything above is LIMIT */

/* Header offsets (section 3). */
enum {
    H_CRC = 4, H_VERSION = 8, H_FLAGS = 9, H_HEADER_SIZE = 10, H_RECORD_SIZE = 11,
    H_TABLE_SIZE = 12, H_RECORD_COUNT = 14, H_TOTAL_MS = 16, H_PATTERN_COUNT = 20,
    H_SEGMENT_COUNT = 21, H_HANDS = 22, H_DONE_PATTERN = 23
};
/* Record offsets (section 4). */
enum {
    R_KIND = 0,
    S_TECHNIQUE = 1, S_ITERATE = 2, S_COUNT = 3, S_DURATION = 4, S_TICK_EVERY = 6,
    S_WARN_BEFORE = 8, S_START = 10, S_NEXT = 11, S_TICK = 12, S_WARN = 13, S_FLAGS = 14,
    L_ITERATE = 1, L_COUNT = 2, L_ROUND = 3, L_BODY_COUNT = 4
};

static uint16_t u16_at(const uint8_t *b) { return (uint16_t)(b[0] | (b[1] << 8)); }

static uint32_t u32_at(const uint8_t *b)
{
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

/* ------------------------------------------------------------------ names */

const char *hc_table_error_name(int code)
{
    static const char *const names[] = {"OK", "TOO_SHORT", "BAD_MAGIC", "BAD_VERSION", "BAD_CRC", "BAD_SIZE",
                                        "LIMIT", "BAD_RECORD", "BAD_PATTERN", "BAD_NESTING", "BAD_NAMES"};
    return (code >= 0 && code <= HC_BAD_NAMES) ? names[code] : "UNKNOWN";
}

const char *hc_cue_name(int kind)
{
    static const char *const names[] = {"", "tick", "warn", "start", "next", "round", "switch", "done"};
    return (kind >= 0 && kind <= HC_CUE_DONE) ? names[kind] : "";
}

/* ------------------------------------------------------------------ CRC-32 */

uint32_t hc_crc32(uint32_t crc, const uint8_t *data, size_t length)
{
    /* Reflected 0xEDB88320, four bits at a time: a 64-byte table instead of 1 KiB. */
    static const uint32_t nibble[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
        0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
    size_t i;
    crc = ~crc;
    for (i = 0; i < length; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ nibble[crc & 0x0Fu];
    }
    return ~crc;
}

/* ------------------------------------------------------------------ validation */

/* Strict UTF-8 as Python decodes it: no overlongs, no surrogates, <= U+10FFFF. */
static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t more;
        uint8_t lo = 0x80u, hi = 0xBFu; /* allowed range of the first continuation byte */
        if (c < 0x80u) {
            i++;
            continue;
        }
        if (c >= 0xC2u && c <= 0xDFu) {
            more = 1;
        } else if (c >= 0xE0u && c <= 0xEFu) {
            more = 2;
            if (c == 0xE0u) lo = 0xA0u;
            if (c == 0xEDu) hi = 0x9Fu;
        } else if (c >= 0xF0u && c <= 0xF4u) {
            more = 3;
            if (c == 0xF0u) lo = 0x90u;
            if (c == 0xF4u) hi = 0x8Fu;
        } else {
            return false;
        }
        if (n - i - 1 < more) return false;
        if (s[i + 1] < lo || s[i + 1] > hi) return false;
        {
            size_t k;
            for (k = 2; k <= more; k++) {
                if (s[i + k] < 0x80u || s[i + k] > 0xBFu) return false;
            }
        }
        i += more + 1;
    }
    return true;
}

static bool ref_ok(uint8_t ref, uint8_t pattern_count) { return ref == HC_NO_PATTERN || ref < pattern_count; }

static uint8_t hand_count(uint8_t hands) { return hands >= 2u ? 2u : 1u; }

/* Count rules shared by STEP and LOOP (check 20 a). */
static bool count_ok(uint8_t iterate, uint8_t count, uint8_t hands)
{
    if (count < 1u) return false; /* count is a u8: <= MAX_COUNT always */
    if (iterate == ITERATE_FINGER && count > 5u) return false;
    if (iterate == ITERATE_HAND && count != hand_count(hands)) return false;
    return true;
}

/* Check 18: one pattern's segments (pattern_problem in protocol/table.py). */
static bool pattern_ok(const uint8_t *seg, uint8_t count)
{
    uint32_t units = 0;
    uint8_t i;
    if (count < 1u || count > MAX_SEGMENTS_PER_PATTERN) return false;
    if (seg[0] == 0u || seg[2u * (count - 1u)] == 0u) return false;
    for (i = 0; i < count; i++) {
        uint8_t amplitude = seg[2u * i], duration = seg[2u * i + 1u];
        if (duration == 0u) return false;
        if (amplitude > MAX_AMPLITUDE) return false;
        if (amplitude != 0u && duration < MIN_PULSE_UNITS) return false;
        if (amplitude == 0u && duration < MIN_GAP_UNITS) return false;
        units += duration;
    }
    return units <= MAX_PATTERN_UNITS;
}

/* Whether a table of this version gives the acknowledgement bits meaning (format 2, SPEC.md 3.1). */
static bool reads_ack(const uint8_t *t) { return t[H_VERSION] >= 2u; }

/* Check 20 for one STEP record. */
static bool step_ok(const uint8_t *t, const uint8_t *r, uint8_t pattern_count)
{
    uint16_t duration = u16_at(r + S_DURATION), tick = u16_at(r + S_TICK_EVERY), warn = u16_at(r + S_WARN_BEFORE);
    if (duration < MIN_STEP_UNITS) return false;
    if (warn >= duration) return false;
    if (tick != 0u && tick < MIN_STEP_UNITS) return false;
    if ((tick != 0u) != (r[S_TICK] != HC_NO_PATTERN)) return false;
    if ((warn != 0u) != (r[S_WARN] != HC_NO_PATTERN)) return false;
    if (reads_ack(t) && (r[S_FLAGS] & STEP_FLAG_ACK) && r[S_START] == HC_NO_PATTERN) return false; /* check 20 h */
    return ref_ok(r[S_START], pattern_count) && ref_ok(r[S_NEXT], pattern_count) &&
           ref_ok(r[S_TICK], pattern_count) && ref_ok(r[S_WARN], pattern_count);
}

static uint64_t saturate(uint64_t v) { return v > TOTAL_CAP ? TOTAL_CAP : v; }

hc_table_error hc_validate(const uint8_t *t, size_t length)
{
    uint32_t header_size, record_size, record_count, pattern_count, segment_count;
    uint32_t records_end, patterns_end, segments_end, i, expected_first;
    const uint8_t *records, *descriptors, *segments;

    /* Stage A: header (SPEC.md section 11, checks 1-7). */
    if (length < HC_TABLE_HEADER_SIZE) return HC_TOO_SHORT;
    if (memcmp(t, "HCue", 4) != 0) return HC_BAD_MAGIC;
    if (t[H_VERSION] < HC_TABLE_BASE_VERSION || t[H_VERSION] > HC_TABLE_FORMAT_VERSION) return HC_BAD_VERSION;
    header_size = t[H_HEADER_SIZE];
    record_size = t[H_RECORD_SIZE];
    if (header_size < HC_TABLE_HEADER_SIZE || record_size < HC_TABLE_RECORD_SIZE) return HC_BAD_SIZE;
    if ((size_t)u16_at(t + H_TABLE_SIZE) != length) return HC_BAD_SIZE;
    if (length > HC_MAX_TABLE_BYTES) return HC_LIMIT;
    if (hc_crc32(0, t + 8, length - 8u) != u32_at(t + H_CRC)) return HC_BAD_CRC;

    /* Stage B: sections (checks 8-11).  length <= 32768 from here on, and
     * every offset below fits in 32 bits (255 + 65535 * 255 + 510 + 510). */
    record_count = u16_at(t + H_RECORD_COUNT);
    pattern_count = t[H_PATTERN_COUNT];
    segment_count = t[H_SEGMENT_COUNT];
    records_end = header_size + record_count * record_size;
    patterns_end = records_end + 2u * pattern_count;
    segments_end = patterns_end + 2u * segment_count;
    if (segments_end > length) return HC_BAD_SIZE;
    records = t + header_size;
    descriptors = t + records_end;
    segments = t + patterns_end;
    for (i = 0; i < record_count; i++) {
        uint8_t kind = records[i * record_size + R_KIND];
        if (kind != KIND_STEP && kind != KIND_LOOP) return HC_BAD_RECORD;
    }
    {
        size_t at = segments_end;
        if (t[H_FLAGS] & FLAG_NAMES) {
            for (i = 0; i <= pattern_count; i++) { /* routine name, then one per pattern */
                size_t n;
                if (at >= length) return HC_BAD_RECORD;
                n = t[at++];
                if (length - at < n) return HC_BAD_RECORD;
                if (!utf8_valid(t + at, n)) return HC_BAD_RECORD;
                at += n;
            }
        }
        if (at != length) return HC_BAD_RECORD; /* trailing bytes */
    }

    /* Stage C: pattern tiling and enumerations (checks 12-15). */
    expected_first = 0;
    for (i = 0; i < pattern_count; i++) {
        if (descriptors[2u * i] != expected_first) return HC_BAD_PATTERN;
        expected_first += descriptors[2u * i + 1u];
        if (expected_first > segment_count) return HC_BAD_PATTERN;
    }
    if (expected_first != segment_count) return HC_BAD_PATTERN;
    for (i = 0; i < record_count; i++) {
        const uint8_t *r = records + i * record_size;
        if (r[R_KIND] == KIND_STEP) {
            if (r[S_TECHNIQUE] < 1u || r[S_TECHNIQUE] > MAX_TECHNIQUE || r[S_ITERATE] > ITERATE_HAND) return HC_BAD_RECORD;
        } else if (r[L_ITERATE] > ITERATE_HAND) {
            return HC_BAD_RECORD;
        }
    }
    if (t[H_HANDS] > 3u) return HC_BAD_RECORD;

    /* Stage D: limits and references (checks 16-21 here, 22-23 below). */
    if (record_count < 1u || record_count > HC_MAX_RECORDS) return HC_LIMIT;
    if (pattern_count > HC_MAX_PATTERNS) return HC_LIMIT;
    for (i = 0; i < pattern_count; i++) {
        if (!pattern_ok(segments + 2u * descriptors[2u * i], descriptors[2u * i + 1u])) return HC_BAD_PATTERN;
    }
    if (t[H_FLAGS] & FLAG_NAMES) {
        size_t at = segments_end;
        for (i = 0; i <= pattern_count; i++) {
            if (t[at] > MAX_NAME_BYTES) return HC_BAD_NAMES;
            at += 1u + t[at];
        }
    }
    for (i = 0; i < record_count; i++) {
        const uint8_t *r = records + i * record_size;
        if (r[R_KIND] == KIND_STEP) {
            if (!count_ok(r[S_ITERATE], r[S_COUNT], t[H_HANDS])) return HC_BAD_RECORD;
            if (!step_ok(t, r, (uint8_t)pattern_count)) return HC_BAD_RECORD;
        } else {
            if (!count_ok(r[L_ITERATE], r[L_COUNT], t[H_HANDS])) return HC_BAD_RECORD;
            if (!ref_ok(r[L_ROUND], (uint8_t)pattern_count)) return HC_BAD_RECORD;
        }
    }
    if (!ref_ok(t[H_DONE_PATTERN], (uint8_t)pattern_count)) return HC_BAD_RECORD;
    if (reads_ack(t) && (t[H_FLAGS] & FLAG_ACK_DONE) && t[H_DONE_PATTERN] == HC_NO_PATTERN) return HC_BAD_RECORD; /* check 21 */

    /* Loop structure (check 22) and total (check 23) in one walk with a stack
     * of open loops; a nesting fault anywhere wins over the total. */
    {
        /* sum: the routine's total; longest: that plus every acknowledgement wait at its cap (check 23) */
        struct { uint32_t end; uint64_t sum, longest; uint8_t iterate, count; } open[HC_MAX_LOOP_NESTING + 1u];
        uint32_t depth = 0;
        open[0].end = record_count;
        open[0].sum = 0;
        open[0].longest = 0;
        open[0].iterate = ITERATE_NONE;
        open[0].count = 1;
        for (i = 0; i <= record_count; i++) {
            const uint8_t *r;
            uint8_t iterate;
            uint32_t d;
            while (depth > 0 && i >= open[depth].end) { /* close finished loop bodies */
                uint64_t loop_total = saturate(open[depth].sum * open[depth].count);
                uint64_t loop_longest = saturate(open[depth].longest * open[depth].count);
                depth--;
                open[depth].sum = saturate(open[depth].sum + loop_total);
                open[depth].longest = saturate(open[depth].longest + loop_longest);
            }
            if (i == record_count) break;
            r = records + i * record_size;
            iterate = r[R_KIND] == KIND_STEP ? r[S_ITERATE] : r[L_ITERATE];
            if (r[R_KIND] == KIND_LOOP) {
                uint32_t body = u16_at(r + L_BODY_COUNT);
                if (depth + 1u > HC_MAX_LOOP_NESTING) return HC_BAD_NESTING;
                if (body < 1u || i + 1u + body > open[depth].end) return HC_BAD_NESTING;
            }
            for (d = 1; d <= depth; d++) {
                if (iterate != ITERATE_NONE && open[d].iterate == iterate) return HC_BAD_NESTING;
            }
            if (r[R_KIND] == KIND_LOOP) {
                depth++;
                open[depth].end = i + 1u + u16_at(r + L_BODY_COUNT);
                open[depth].sum = 0;
                open[depth].longest = 0;
                open[depth].iterate = iterate;
                open[depth].count = r[L_COUNT];
            } else {
                uint64_t step_total = (uint64_t)r[S_COUNT] * u16_at(r + S_DURATION) * TIME_UNIT_MS;
                uint64_t waits = reads_ack(t) && (r[S_FLAGS] & STEP_FLAG_ACK) ? (uint64_t)r[S_COUNT] * HC_ACK_GIVE_UP_MS : 0u;
                open[depth].sum = saturate(open[depth].sum + step_total);
                open[depth].longest = saturate(open[depth].longest + step_total + waits);
            }
        }
        if (open[0].sum > 0xFFFFFFFFull) return HC_LIMIT;
        /* Routine time counts acknowledgement waits: it must fit in u32 even if nobody presses. */
        if (saturate(open[0].longest + (reads_ack(t) && (t[H_FLAGS] & FLAG_ACK_DONE) ? HC_ACK_GIVE_UP_MS : 0u)) > 0xFFFFFFFFull) return HC_LIMIT;
        /* Stage E (check 24). */
        if (open[0].sum != u32_at(t + H_TOTAL_MS)) return HC_BAD_RECORD;
    }
    return HC_OK;
}

/* ------------------------------------------------------------------ reading in place */

static const uint8_t *record_at(const hc_player *p, uint16_t index)
{
    return p->table + p->table[H_HEADER_SIZE] + (uint32_t)index * p->table[H_RECORD_SIZE];
}

static uint16_t record_count(const hc_player *p) { return u16_at(p->table + H_RECORD_COUNT); }

/* Pattern descriptor `index` and its first segment. */
static const uint8_t *descriptor_at(const hc_player *p, uint8_t index)
{
    return p->table + p->table[H_HEADER_SIZE] + (uint32_t)record_count(p) * p->table[H_RECORD_SIZE] + 2u * index;
}

static const uint8_t *segment_at(const hc_player *p, uint8_t pattern, uint8_t n)
{
    const uint8_t *segments = descriptor_at(p, p->table[H_PATTERN_COUNT]);
    return segments + 2u * ((uint32_t)descriptor_at(p, pattern)[0] + n);
}

static const uint8_t *current_step(const hc_player *p) { return record_at(p, p->pc); }

static bool step_waits(const hc_player *p, const uint8_t *s) { return reads_ack(p->table) && (s[S_FLAGS] & STEP_FLAG_ACK); }

static bool done_waits(const hc_player *p) { return reads_ack(p->table) && (p->table[H_FLAGS] & FLAG_ACK_DONE); }

/* ------------------------------------------------------------------ motor (12.5) */

uint8_t hc_scaled_amplitude(uint8_t amplitude, uint8_t strength)
{
    unsigned scaled;
    if (amplitude <= HC_MIN_FELT_AMPLITUDE) return amplitude;
    scaled = ((unsigned)amplitude * strength + 50u) / 100u;
    return (uint8_t)(scaled < HC_MIN_FELT_AMPLITUDE ? HC_MIN_FELT_AMPLITUDE : scaled);
}

/* The level a segment of `amplitude` plays at: scaled by the strength its pattern started with. */
static uint8_t level_of(const hc_player *p, uint8_t amplitude) { return hc_scaled_amplitude(amplitude, p->motor_strength); }

static void drive(hc_player *p, uint8_t level)
{
    if (level != p->motor_level) {
        p->motor_level = level;
        if (p->cb.drive) p->cb.drive(p->cb.ctx, level);
    }
}

static void report(hc_player *p, uint8_t amplitude, uint64_t duration)
{
    hc_segment s;
    if (!p->cb.segment) return;
    s.t_ms = p->motor_start;
    s.duration_ms = (uint32_t)duration;
    s.amplitude = amplitude;
    s.cue = p->motor_cue;
    s.pattern = p->motor_pattern;
    s.step = p->motor_step;
    s.hand = p->motor_hand;
    s.finger = p->motor_finger;
    p->cb.segment(p->cb.ctx, &s);
}

static uint64_t motor_deadline(const hc_player *p)
{
    if (!p->motor_playing) return HC_NEVER;
    return p->motor_start + (uint64_t)segment_at(p, p->motor_pattern, p->motor_index)[1] * SEGMENT_UNIT_MS;
}

/* Finish every segment that ends at or before t; `quiet` when a cut follows at
 * t, so the motor is not switched for a segment that will run 0 ms. */
static void motor_advance(hc_player *p, uint64_t t, bool quiet)
{
    while (p->motor_playing) {
        const uint8_t *seg = segment_at(p, p->motor_pattern, p->motor_index);
        uint64_t end = p->motor_start + (uint64_t)seg[1] * SEGMENT_UNIT_MS;
        if (end > t) return;
        if (seg[0]) report(p, level_of(p, seg[0]), (uint64_t)seg[1] * SEGMENT_UNIT_MS);
        p->motor_index++;
        p->motor_start = end;
        if (p->motor_index == descriptor_at(p, p->motor_pattern)[1]) {
            p->motor_playing = 0;
            if (!quiet) drive(p, 0);
        } else if (!quiet && p->state != HC_PAUSED) {
            drive(p, level_of(p, segment_at(p, p->motor_pattern, p->motor_index)[0]));
        }
    }
}

/* End the pattern at t (an on segment in progress is reported up to t),
 * leaving the drive level to the caller. */
static void motor_end(hc_player *p, uint64_t t)
{
    motor_advance(p, t, true);
    if (p->motor_playing) {
        uint8_t amplitude = segment_at(p, p->motor_pattern, p->motor_index)[0];
        if (amplitude && t > p->motor_start) report(p, level_of(p, amplitude), t - p->motor_start);
        p->motor_playing = 0;
    }
}

static void motor_cut(hc_player *p, uint64_t t)
{
    motor_end(p, t);
    drive(p, 0);
}

static void motor_play(hc_player *p, const hc_cue *cue)
{
    motor_end(p, cue->t_ms);
    p->motor_playing = 1;
    p->motor_pattern = cue->pattern;
    p->motor_index = 0;
    p->motor_start = cue->t_ms;
    p->motor_cue = cue->kind;
    p->motor_step = cue->step;
    p->motor_hand = cue->hand;
    p->motor_finger = cue->finger;
    p->motor_strength = p->strength;
    /* Straight from the old level to the new one; a skip while paused plays on resume. */
    drive(p, p->state == HC_PAUSED ? 0u : level_of(p, segment_at(p, cue->pattern, 0)[0]));
}

/* ------------------------------------------------------------------ interpreter (12.1) */

static uint8_t iteration_kind(uint8_t iterate)
{
    return iterate == ITERATE_HAND ? HC_CUE_SWITCH : iterate == ITERATE_FINGER ? HC_CUE_NEXT : HC_CUE_ROUND;
}

static void pend(hc_player *p, uint8_t kind, uint8_t pattern)
{
    if (pattern != HC_NO_PATTERN && kind > p->pending_kind) { /* 12.4: silent slots never mask; highest wins */
        p->pending_kind = kind;
        p->pending_pattern = pattern;
    }
}

/* Hand and finger now (12.2). */
static void position(const hc_player *p, uint8_t *hand, uint8_t *finger)
{
    uint8_t hands = p->table[H_HANDS], i;
    /* hand_order[iteration] as HC_HAND_*: LEFT, RIGHT, LEFT_THEN_RIGHT, RIGHT_THEN_LEFT */
    static const uint8_t order[4][2] = {{HC_HAND_LEFT, 0}, {HC_HAND_RIGHT, 0},
                                        {HC_HAND_LEFT, HC_HAND_RIGHT}, {HC_HAND_RIGHT, HC_HAND_LEFT}};
    *hand = HC_HAND_NONE;
    *finger = HC_FINGER_NONE;
    if (p->state == HC_FINISHED || !p->step_active) return; /* finished, or waiting at the finish: nothing bound */
    if (hands < 2u) *hand = order[hands][0];
    for (i = 0; i <= p->depth; i++) {
        uint8_t iterate, iteration;
        if (i < p->depth) {
            iterate = p->frames[i].iterate;
            iteration = p->frames[i].iteration;
        } else if (p->step_active) {
            iterate = current_step(p)[S_ITERATE];
            iteration = p->step_iteration;
        } else {
            break;
        }
        if (iterate == ITERATE_HAND) *hand = order[hands][iteration & 1u];
        if (iterate == ITERATE_FINGER) *finger = (uint8_t)(HC_FINGER_THUMB + iteration);
    }
}

static void flush(hc_player *p, uint64_t t)
{
    hc_cue cue;
    if (p->pending_kind == HC_CUE_NONE) return;
    cue.t_ms = t;
    cue.kind = p->pending_kind;
    cue.pattern = p->pending_pattern;
    cue.step = p->step_active ? p->pc : HC_NO_STEP;
    position(p, &cue.hand, &cue.finger);
    p->pending_kind = HC_CUE_NONE;
    p->last_cue = cue.kind;
    if (p->cues < 0xFFFFu) p->cues++;
    if (p->cb.cue) p->cb.cue(p->cb.ctx, &cue);
    motor_play(p, &cue);
}

/* The current iteration's time runs from t: its end, ticks and warning. */
static void run_iteration(hc_player *p, uint64_t t)
{
    const uint8_t *s = current_step(p);
    uint64_t d = (uint64_t)u16_at(s + S_DURATION) * TIME_UNIT_MS;
    uint64_t tick = (uint64_t)u16_at(s + S_TICK_EVERY) * TIME_UNIT_MS;
    uint64_t warn = (uint64_t)u16_at(s + S_WARN_BEFORE) * TIME_UNIT_MS;
    p->iteration_end = t + d;
    p->next_tick = (tick != 0u && tick < d) ? t + tick : HC_NEVER;
    p->warn_at = warn != 0u ? t + d - warn : HC_NEVER;
}

/* Wait for an acknowledgement after the cue just pended at t (12.10): nothing else is scheduled. */
static void start_wait(hc_player *p, uint64_t t, uint8_t kind)
{
    p->ack_kind = kind;
    p->ack_since = t;
    p->ack_repeats = 0;
    p->iteration_end = p->next_tick = p->warn_at = HC_NEVER;
}

/* The wait ends at t: given by a press, missed at the cap, or cancelled by a skip. */
enum { ACK_GIVEN, ACK_MISSED, ACK_CANCELLED };
static void end_wait(hc_player *p, uint64_t t, int outcome)
{
    uint8_t kind = p->ack_kind;
    p->ack_kind = HC_CUE_NONE;
    p->waited_ms += (uint32_t)(t - p->ack_since);
    if (kind == HC_CUE_DONE) {
        p->state = HC_FINISHED;
        p->finished_at = (uint32_t)t;
    } else if (outcome != ACK_CANCELLED) {
        run_iteration(p, t);
    }
    if (outcome != ACK_CANCELLED && p->cb.ack) p->cb.ack(p->cb.ctx, kind, outcome == ACK_GIVEN, t);
}

static uint8_t ack_pattern(const hc_player *p)
{
    return p->ack_kind == HC_CUE_DONE ? p->table[H_DONE_PATTERN] : current_step(p)[S_START];
}

static void begin_iteration(hc_player *p, uint64_t t, uint8_t iteration)
{
    const uint8_t *s = current_step(p);
    p->step_iteration = iteration;
    if (iteration == 0u) {
        pend(p, HC_CUE_START, s[S_START]);
    } else {
        pend(p, s[S_ITERATE] == ITERATE_NONE ? HC_CUE_NEXT : iteration_kind(s[S_ITERATE]), s[S_NEXT]);
    }
    if (iteration == 0u && step_waits(p, s)) {
        start_wait(p, t, HC_CUE_START);
    } else {
        run_iteration(p, t);
    }
}

/* From pc on, through loop ends and starts, to the next step to play (or the end). */
static void enter(hc_player *p, uint64_t t)
{
    for (;;) {
        const uint8_t *r;
        if (p->depth > 0 && p->pc == p->frames[p->depth - 1u].end) {
            hc_frame *top = &p->frames[p->depth - 1u];
            top->iteration++;
            if (top->iteration < top->count) {
                p->pc = top->first;
                pend(p, iteration_kind(top->iterate), top->round_pattern);
            } else {
                p->depth--;
            }
            continue;
        }
        if (p->pc >= record_count(p)) {
            p->step_active = 0;
            pend(p, HC_CUE_DONE, p->table[H_DONE_PATTERN]);
            if (done_waits(p)) {
                start_wait(p, t, HC_CUE_DONE); /* finished once acknowledged (or at the cap) */
            } else {
                p->state = HC_FINISHED;
                p->finished_at = (uint32_t)t;
            }
            return;
        }
        r = record_at(p, p->pc);
        if (r[R_KIND] == KIND_LOOP) {
            hc_frame *f = &p->frames[p->depth++]; /* validation bounds depth by HC_MAX_LOOP_NESTING */
            f->first = (uint16_t)(p->pc + 1u);
            f->end = (uint16_t)(p->pc + 1u + u16_at(r + L_BODY_COUNT));
            f->iterate = r[L_ITERATE];
            f->count = r[L_COUNT];
            f->round_pattern = r[L_ROUND];
            f->iteration = 0;
            p->pc++;
            continue;
        }
        p->step_active = 1;
        begin_iteration(p, t, 0);
        return;
    }
}

/* The next repeat of the waiting cue, or HC_NEVER after the last one before the cap. */
static uint64_t ack_next_repeat(const hc_player *p)
{
    uint64_t after = (uint64_t)(p->ack_repeats + 1u) * HC_ACK_REPEAT_MS;
    return after < HC_ACK_GIVE_UP_MS ? p->ack_since + after : HC_NEVER;
}

static uint64_t interpreter_deadline(const hc_player *p)
{
    uint64_t due = p->iteration_end;
    if (p->state != HC_RUNNING) return HC_NEVER;
    if (p->ack_kind != HC_CUE_NONE) {
        uint64_t repeat = ack_next_repeat(p), give_up = p->ack_since + HC_ACK_GIVE_UP_MS;
        return repeat < give_up ? repeat : give_up;
    }
    if (!p->step_active) return HC_NEVER;
    if (p->next_tick < due) due = p->next_tick;
    if (p->warn_at < due) due = p->warn_at;
    return due;
}

/* Everything the interpreter has due at exactly t. */
static void interpreter_advance(hc_player *p, uint64_t t)
{
    while (interpreter_deadline(p) == t) {
        const uint8_t *s;
        if (p->ack_kind != HC_CUE_NONE) {
            if (ack_next_repeat(p) == t) {
                pend(p, p->ack_kind, ack_pattern(p));
                p->ack_repeats++;
            }
            if (p->ack_since + HC_ACK_GIVE_UP_MS == t) end_wait(p, t, ACK_MISSED);
            flush(p, t);
            continue;
        }
        s = current_step(p);
        if (p->next_tick == t) {
            uint64_t following = t + (uint64_t)u16_at(s + S_TICK_EVERY) * TIME_UNIT_MS;
            pend(p, HC_CUE_TICK, s[S_TICK]);
            p->next_tick = following < p->iteration_end ? following : HC_NEVER;
        }
        if (p->warn_at == t) {
            pend(p, HC_CUE_WARN, s[S_WARN]);
            p->warn_at = HC_NEVER;
        }
        if (p->iteration_end == t) {
            if (p->step_iteration + 1u < s[S_COUNT]) {
                begin_iteration(p, t, (uint8_t)(p->step_iteration + 1u));
            } else {
                p->pc++;
                enter(p, t);
            }
        }
        flush(p, t);
    }
}

/* ------------------------------------------------------------------ API */

static void reset(hc_player *p)
{
    p->state = HC_IDLE;
    p->now = 0;
    p->pc = 0;
    p->depth = 0;
    p->step_active = 0;
    p->step_iteration = 0;
    p->iteration_end = HC_NEVER;
    p->next_tick = HC_NEVER;
    p->warn_at = HC_NEVER;
    p->skipped_ms = 0;
    p->finished_at = 0;
    p->waited_ms = 0;
    p->ack_kind = HC_CUE_NONE;
    p->ack_repeats = 0;
    p->ack_since = 0;
    p->pending_kind = HC_CUE_NONE;
    p->pending_pattern = HC_NO_PATTERN;
}

void hc_load_verified(hc_player *p, const uint8_t *table, const hc_callbacks *cb)
{
    memset(p, 0, sizeof *p);
    p->table = table;
    p->cb = *cb;
    p->strength = HC_MAX_STRENGTH;
    p->motor_strength = HC_MAX_STRENGTH;
    reset(p);
}

hc_table_error hc_load(hc_player *p, const uint8_t *table, size_t length, const hc_callbacks *cb)
{
    hc_table_error error = hc_validate(table, length);
    if (error != HC_OK) {
        memset(p, 0, sizeof *p);
        return error;
    }
    hc_load_verified(p, table, cb);
    return HC_OK;
}

hc_status_code hc_start(hc_player *p)
{
    if (!p->table) return HC_STATUS_NO_ROUTINE;
    motor_cut(p, p->now);
    reset(p);
    p->cues = 0;
    p->last_cue = HC_CUE_NONE;
    p->state = HC_RUNNING;
    enter(p, 0);
    flush(p, 0);
    return HC_STATUS_OK;
}

hc_status_code hc_pause(hc_player *p)
{
    if (!p->table) return HC_STATUS_NO_ROUTINE;
    if (p->state != HC_RUNNING) return HC_STATUS_BAD_STATE;
    motor_cut(p, p->now); /* the interrupted pattern is abandoned */
    p->state = HC_PAUSED;
    return HC_STATUS_OK;
}

hc_status_code hc_set_strength(hc_player *p, uint8_t strength)
{
    if (strength < HC_MIN_STRENGTH || strength > HC_MAX_STRENGTH) return HC_STATUS_BAD_REQUEST;
    p->strength = strength;
    return HC_STATUS_OK;
}

hc_status_code hc_resume(hc_player *p)
{
    if (!p->table) return HC_STATUS_NO_ROUTINE;
    if (p->state != HC_PAUSED) return HC_STATUS_BAD_STATE;
    p->state = HC_RUNNING;
    if (p->motor_playing) drive(p, level_of(p, segment_at(p, p->motor_pattern, p->motor_index)[0])); /* a cue a skip chose */
    return HC_STATUS_OK;
}

hc_status_code hc_skip(hc_player *p, hc_skip_scope scope)
{
    uint64_t left;
    const uint8_t *s;
    bool next_iteration;
    if (!p->table) return HC_STATUS_NO_ROUTINE;
    if (p->state != HC_RUNNING && p->state != HC_PAUSED) return HC_STATUS_BAD_STATE;
    if (p->ack_kind != HC_CUE_NONE) {
        bool at_finish = p->ack_kind == HC_CUE_DONE;
        end_wait(p, p->now, ACK_CANCELLED); /* a skip ends the wait without an acknowledgement */
        if (at_finish) {
            if (p->motor_playing) drive(p, level_of(p, segment_at(p, p->motor_pattern, p->motor_index)[0]));
            return HC_STATUS_OK;
        }
    }
    if (!p->step_active) return HC_STATUS_OK;
    s = current_step(p);
    next_iteration = scope == HC_SKIP_ITERATION && p->step_iteration + 1u < s[S_COUNT];
    left = p->iteration_end == HC_NEVER ? (uint64_t)u16_at(s + S_DURATION) * TIME_UNIT_MS /* its time never began */
         : p->iteration_end > p->now ? p->iteration_end - p->now : 0u;
    if (scope == HC_SKIP_STEP)
        left += (uint64_t)(s[S_COUNT] - p->step_iteration - 1u) * u16_at(s + S_DURATION) * TIME_UNIT_MS;
    p->skipped_ms += (uint32_t)left;
    if (next_iteration) {
        begin_iteration(p, p->now, (uint8_t)(p->step_iteration + 1u));
    } else {
        p->pc++;
        enter(p, p->now);
    }
    flush(p, p->now);
    /* Past the end while paused: finished runs the motor again, also for a pattern an earlier skip left waiting. */
    if (p->state == HC_FINISHED && p->motor_playing) drive(p, level_of(p, segment_at(p, p->motor_pattern, p->motor_index)[0]));
    return HC_STATUS_OK;
}

hc_status_code hc_ack(hc_player *p)
{
    if (!p->table) return HC_STATUS_NO_ROUTINE;
    if (p->state != HC_RUNNING || p->ack_kind == HC_CUE_NONE) return HC_STATUS_BAD_STATE;
    end_wait(p, p->now, ACK_GIVEN);
    return HC_STATUS_OK;
}

hc_status_code hc_stop(hc_player *p)
{
    if (!p->table) return HC_STATUS_NO_ROUTINE;
    motor_cut(p, p->now);
    reset(p);
    return HC_STATUS_OK;
}

static uint64_t next_due(const hc_player *p)
{
    uint64_t due = interpreter_deadline(p), motor;
    if (p->state == HC_PAUSED || p->state == HC_IDLE) return HC_NEVER;
    motor = motor_deadline(p);
    return motor < due ? motor : due;
}

void hc_tick(hc_player *p, uint32_t ms)
{
    uint64_t target, due;
    if (!p->table || p->state == HC_IDLE || p->state == HC_PAUSED) return;
    target = p->now + ms;
    while ((due = next_due(p)) <= target) {
        p->now = due;
        if (p->state == HC_RUNNING) interpreter_advance(p, due);
        motor_advance(p, due, false);
        if (p->state == HC_PAUSED || p->state == HC_IDLE) return; /* defensive: callbacks do not change state */
    }
    p->now = target;
}

uint32_t hc_ms_until_due(const hc_player *p)
{
    uint64_t due;
    if (!p->table) return UINT32_MAX;
    due = next_due(p);
    if (due == HC_NEVER) return UINT32_MAX;
    return due - p->now >= UINT32_MAX ? UINT32_MAX - 1u : (uint32_t)(due - p->now);
}

void hc_get_status(const hc_player *p, hc_status *st)
{
    bool playing;
    uint32_t total, elapsed;
    uint64_t waited;
    memset(st, 0, sizeof *st);
    st->step = HC_NO_STEP;
    if (!p->table) return;
    total = u32_at(p->table + H_TOTAL_MS);
    waited = (uint64_t)p->waited_ms + (p->ack_kind != HC_CUE_NONE ? p->now - p->ack_since : 0u);
    playing = (p->state == HC_RUNNING || p->state == HC_PAUSED) && p->step_active;
    st->state = p->state;
    st->total_ms = total;
    st->last_cue = p->last_cue;
    st->cues = p->cues;
    if (p->state == HC_IDLE) {
        elapsed = 0;
    } else if (p->state == HC_FINISHED) {
        elapsed = p->finished_at; /* routine time stops at the end (earlier after a skip) */
    } else {
        elapsed = p->now < total + waited ? (uint32_t)p->now : (uint32_t)(total + waited);
    }
    st->elapsed_ms = elapsed;
    st->ack_pending = p->state == HC_RUNNING && p->ack_kind != HC_CUE_NONE;
    if (st->ack_pending) {
        st->state = HC_WAITING; /* running, waiting for the wearer's press (12.10) */
        st->ack_cue = p->ack_kind;
    }
    if (p->state != HC_FINISHED) {
        uint64_t used = (uint64_t)elapsed + p->skipped_ms;
        /* time spent waiting for acknowledgements does not count against the routine (12.10) */
        st->remaining_ms = used < total + waited ? (uint32_t)(total + waited - used) : 0u;
    }
    if (playing) {
        const uint8_t *s = current_step(p);
        st->step = p->pc;
        st->technique = s[S_TECHNIQUE];
        st->iteration = p->step_iteration;
        position(p, &st->hand, &st->finger);
        st->step_remaining_ms = p->iteration_end == HC_NEVER ? (uint32_t)u16_at(s + S_DURATION) * TIME_UNIT_MS /* waiting: all of it */
                              : p->iteration_end > p->now ? (uint32_t)(p->iteration_end - p->now) : 0u;
    }
    if (st->ack_pending) { /* the time the wearer has left to press, also at the finish (no step) */
        uint64_t give_up = p->ack_since + HC_ACK_GIVE_UP_MS;
        st->step_remaining_ms = give_up > p->now ? (uint32_t)(give_up - p->now) : 0u;
    }
}
