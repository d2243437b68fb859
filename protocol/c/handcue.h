/*
 * handcue.h - HandCue step-table loader and interpreter, C99 reference.
 *
 * What it is: the part of band firmware that turns a stored step table into
 * motor drive levels, written from protocol/SPEC.md and held by
 * tests/test_c_reference.py to the Python loader (protocol/table.py) and the
 * Python band simulator (firmware_sim/).
 *
 *   - hc_validate() checks a table in place, in the check order of SPEC.md
 *     section 11, and returns the same TableError code as the Python loader.
 *   - hc_player runs a validated table where it lies (flash or RAM): call
 *     hc_tick() with the milliseconds that passed, it calls your drive()
 *     callback whenever the motor level must change.
 *
 * Rules the code keeps: C99, no dynamic allocation, no recursion, no floating
 * point, no libc beyond <stdint.h> <stddef.h> <stdbool.h> <string.h>.
 * Not thread-safe: call every hc_* function of one player from one context
 * (for example the main loop, or a single RTOS thread).
 *
 * RAM: one hc_player is the whole interpreter state (the table itself stays
 * where it is, read-only).  sizeof(hc_player) is at most HC_PLAYER_MAX_BYTES
 * (176) on 32-bit and 64-bit targets: 160 bytes with gcc and clang on x86-64
 * (tests/test_c_reference.py checks it).  No static RAM.  Stack (gcc -Os,
 * x86-64, -fstack-usage): hc_validate 240 bytes; hc_tick and the controls
 * about 250 bytes deep, plus what your callbacks use.
 */
#ifndef HANDCUE_H
#define HANDCUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ format */

#define HC_TABLE_FORMAT_VERSION 2u /* the newest format read: 1, and 2 (acknowledgement, SPEC.md 3.1) */
#define HC_TABLE_BASE_VERSION 1u
#define HC_TABLE_HEADER_SIZE 24u
#define HC_TABLE_RECORD_SIZE 16u
#define HC_MAX_TABLE_BYTES 32768u
#define HC_MAX_RECORDS 1024u
#define HC_MAX_PATTERNS 32u
#define HC_MAX_LOOP_NESTING 4u
#define HC_NO_PATTERN 0xFFu
#define HC_NO_STEP 0xFFFFu
#define HC_ACK_REPEAT_MS 5000u   /* an acknowledgement point repeats its cue this often (SPEC.md 12.10) */
#define HC_ACK_GIVE_UP_MS 60000u /* and goes on without a press this long after its first cue */

/* Why a table is refused (protocol.constants.TableError, SPEC.md 9.4). */
typedef enum {
    HC_OK = 0,
    HC_TOO_SHORT = 1,
    HC_BAD_MAGIC = 2,
    HC_BAD_VERSION = 3,
    HC_BAD_CRC = 4,
    HC_BAD_SIZE = 5,
    HC_LIMIT = 6,
    HC_BAD_RECORD = 7,
    HC_BAD_PATTERN = 8,
    HC_BAD_NESTING = 9,
    HC_BAD_NAMES = 10
} hc_table_error;

/* Why a cue fires; when cues coincide the highest value wins (SPEC.md 9.2). */
typedef enum {
    HC_CUE_NONE = 0,
    HC_CUE_TICK = 1,
    HC_CUE_WARN = 2,
    HC_CUE_START = 3,
    HC_CUE_NEXT = 4,
    HC_CUE_ROUND = 5,
    HC_CUE_SWITCH = 6,
    HC_CUE_DONE = 7
} hc_cue_kind;

/* Band states, numbered as in the STATUS body (protocol BandState).  HC_WAITING
 * is what hc_get_status() reports while the player runs and an acknowledgement
 * point waits for the wearer's press (SPEC.md 12.10, 18.1); the player's own
 * state is HC_RUNNING then, and the controls treat it as running. */
typedef enum { HC_IDLE = 0, HC_RUNNING = 1, HC_PAUSED = 2, HC_FINISHED = 3, HC_WAITING = 4 } hc_state;

/* Answers of the controls, numbered as protocol Status codes. */
typedef enum { HC_STATUS_OK = 0, HC_STATUS_BAD_REQUEST = 2, HC_STATUS_BAD_STATE = 4, HC_STATUS_NO_ROUTINE = 5 } hc_status_code;

/* How far a skip goes (SPEC.md 12.6; the SKIP request's optional scope byte,
 * 17.6: no byte means HC_SKIP_STEP). */
typedef enum {
    HC_SKIP_ITERATION = 0, /* to the next iteration: next finger, hand or round, else the next record */
    HC_SKIP_STEP = 1       /* past the current step record and all its iterations */
} hc_skip_scope;

/* Hand and finger, numbered as in the STATUS body: 0 = not bound. */
enum { HC_HAND_NONE = 0, HC_HAND_LEFT = 1, HC_HAND_RIGHT = 2 };
enum { HC_FINGER_NONE = 0, HC_FINGER_THUMB = 1, HC_FINGER_INDEX = 2, HC_FINGER_MIDDLE = 3,
       HC_FINGER_RING = 4, HC_FINGER_LITTLE = 5 };

/* Check a whole table in place: HC_OK or the first failing check's code. */
hc_table_error hc_validate(const uint8_t *table, size_t length);

/* "BAD_CRC" etc. (the TableError names); "UNKNOWN" for other values. */
const char *hc_table_error_name(int code);

/* "tick", "warn", ... "done" (lower case, as in traces); "" for HC_CUE_NONE. */
const char *hc_cue_name(int kind);

/* CRC-32/ISO-HDLC (zlib's), continuing from crc (start with 0). */
uint32_t hc_crc32(uint32_t crc, const uint8_t *data, size_t length);

/* ------------------------------------------------------------------ player */

/* A finished (or cut) motor-on segment, as one line of a timeline trace. */
typedef struct {
    uint64_t t_ms;        /* routine time the segment started */
    uint32_t duration_ms; /* how long the motor ran (cut segments are shorter) */
    uint8_t amplitude;    /* percent, 1..100 */
    uint8_t cue;          /* hc_cue_kind of the cue that played it */
    uint8_t pattern;      /* pattern index */
    uint8_t hand;         /* HC_HAND_* where the band was when the cue fired */
    uint8_t finger;       /* HC_FINGER_* */
    uint16_t step;        /* record index, HC_NO_STEP for the DONE cue */
} hc_segment;

/* A cue that fired (after merging, SPEC.md 12.4). */
typedef struct {
    uint64_t t_ms;
    uint8_t kind;    /* hc_cue_kind */
    uint8_t pattern;
    uint8_t hand;
    uint8_t finger;
    uint16_t step;
} hc_cue;

/* Called from inside hc_tick() and the controls; they must not call hc_* functions. */
typedef struct {
    /* Required: set the motor to amplitude percent now (0 = off); called only on a change. */
    void (*drive)(void *ctx, uint8_t amplitude);
    /* Optional (NULL): a motor-on segment ended or was cut; for traces and logs. */
    void (*segment)(void *ctx, const hc_segment *segment);
    /* Optional (NULL): a cue fired (for STATUS notifications, LEDs, logs). */
    void (*cue)(void *ctx, const hc_cue *cue);
    void *ctx;
    /* Optional (NULL; last, so older initializers leave it out): an acknowledgement
     * point (SPEC.md 12.10) of kind HC_CUE_START or HC_CUE_DONE ended at routine
     * time t_ms, `given` by a press or missed at the cap; for the session history.
     * A point a skip, stop or start ended is not reported. */
    void (*ack)(void *ctx, uint8_t kind, bool given, uint64_t t_ms);
} hc_callbacks;

/* One loop of the loop stack (SPEC.md 12.1). */
typedef struct {
    uint16_t first;
    uint16_t end;
    uint8_t iterate;
    uint8_t count;
    uint8_t round_pattern;
    uint8_t iteration;
} hc_frame;

/* The whole interpreter state.  Treat the fields as private. */
typedef struct {
    const uint8_t *table;
    hc_callbacks cb;
    uint64_t now;           /* routine time, ms (frozen while paused) */
    uint64_t iteration_end; /* deadlines of the current step iteration */
    uint64_t next_tick;     /* HC_NEVER when there is none */
    uint64_t warn_at;
    uint64_t motor_start;   /* routine time the current segment began */
    uint64_t ack_since;     /* routine time of the waiting acknowledgement point's first cue */
    uint32_t finished_at;   /* routine time the last record ended */
    uint32_t skipped_ms;    /* time dropped by skips (for remaining_ms) */
    uint32_t waited_ms;     /* time spent in acknowledgement waits that ended */
    hc_frame frames[HC_MAX_LOOP_NESTING];
    uint16_t pc;
    uint16_t cues;          /* cues fired this session (saturates) */
    uint16_t motor_step;    /* the playing pattern's cue: where it fired */
    uint8_t depth;
    uint8_t state;          /* hc_state */
    uint8_t step_active;
    uint8_t step_iteration;
    uint8_t pending_kind;   /* strongest cue due at the current millisecond */
    uint8_t pending_pattern;
    uint8_t last_cue;
    uint8_t motor_playing;
    uint8_t motor_pattern;
    uint8_t motor_index;    /* segment of the pattern now playing */
    uint8_t motor_cue;
    uint8_t motor_hand;
    uint8_t motor_finger;
    uint8_t motor_level;    /* last level sent to drive() */
    uint8_t strength;       /* cue strength, % (hc_set_strength) */
    uint8_t motor_strength; /* the strength the playing pattern started with */
    uint8_t ack_kind;       /* HC_CUE_START or HC_CUE_DONE while waiting for a press, else HC_CUE_NONE */
    uint8_t ack_repeats;    /* repeats played in the current wait */
} hc_player;

/* Upper bound of sizeof(hc_player) on 32- and 64-bit targets; checked at
 * compile time in handcue.c and reported by tests/test_c_reference.py. */
#define HC_PLAYER_MAX_BYTES 176u

/* What STATUS reports (SPEC.md 18.1); fields as in the STATUS body. */
typedef struct {
    uint8_t state;      /* hc_state; HC_WAITING while an acknowledgement point waits for a press */
    uint16_t step;      /* HC_NO_STEP unless running or paused inside a step */
    uint8_t technique;  /* TechniqueCode, 0 when step is HC_NO_STEP */
    uint8_t iteration;
    uint8_t hand;       /* HC_HAND_* (HC_HAND_NONE unless in a step) */
    uint8_t finger;     /* HC_FINGER_* */
    uint32_t elapsed_ms;
    uint32_t remaining_ms;
    uint32_t step_remaining_ms; /* HC_WAITING: ms until the band gives up waiting (SPEC.md 18.1) */
    uint32_t total_ms;
    uint8_t last_cue;   /* hc_cue_kind, HC_CUE_NONE before the first cue */
    uint16_t cues;
    uint8_t ack_pending; /* the band waits for a press: state is HC_WAITING (kept for older callers) */
    uint8_t ack_cue;     /* HC_CUE_START (of `step`) or HC_CUE_DONE while waiting, else HC_CUE_NONE;
                            not in the STATUS body, where `step` tells them apart */
} hc_status;

/* Validate `table` and load it (idle).  The bytes must stay unchanged and in
 * place while the player uses them.  On error the player holds no routine. */
hc_table_error hc_load(hc_player *p, const uint8_t *table, size_t length, const hc_callbacks *cb);

/* Load a table that was validated before (e.g. at upload, checked again by
 * CRC at boot): no checks at all. */
void hc_load_verified(hc_player *p, const uint8_t *table, const hc_callbacks *cb);

/* Controls (SPEC.md 12.6).  HC_STATUS_BAD_STATE when not allowed now. */
hc_status_code hc_start(hc_player *p);  /* any state: restart at routine time 0 */
hc_status_code hc_pause(hc_player *p);  /* running */
hc_status_code hc_resume(hc_player *p); /* paused */
hc_status_code hc_skip(hc_player *p, hc_skip_scope scope); /* running or paused */
hc_status_code hc_stop(hc_player *p);   /* any state: back to idle */
/* The wearer pressed while the band waits for an acknowledgement (SPEC.md
 * 12.10): the wait ends now.  HC_STATUS_BAD_STATE when nothing waits (not
 * running, or no acknowledgement point): the button then does what it always does. */
hc_status_code hc_ack(hc_player *p);

/* Cue strength (SPEC.md 12.9), 20..100 %, else HC_STATUS_BAD_REQUEST: every
 * motor segment's amplitude is scaled by it (hc_scaled_amplitude) from the
 * next cue on; drive() and the segments get the scaled levels.  hc_load()
 * sets 100, so call it after loading, with the value the band stores. */
#define HC_MIN_STRENGTH 20u
#define HC_MAX_STRENGTH 100u
#define HC_MIN_FELT_AMPLITUDE 20u
hc_status_code hc_set_strength(hc_player *p, uint8_t strength);

/* round(amplitude * strength / 100), half up, never below HC_MIN_FELT_AMPLITUDE;
 * an amplitude at or below that floor (0 = off included) is kept as written. */
uint8_t hc_scaled_amplitude(uint8_t amplitude, uint8_t strength);

/* `ms` milliseconds of band time passed: play everything due in them, each
 * at its exact routine time. */
void hc_tick(hc_player *p, uint32_t ms);

/* Milliseconds until something is due (a cue or a motor change), or
 * UINT32_MAX when nothing is scheduled (idle, paused, finished and quiet).
 * A tickless firmware sleeps this long, then calls hc_tick() with the time
 * that really passed. */
uint32_t hc_ms_until_due(const hc_player *p);

void hc_get_status(const hc_player *p, hc_status *status);

#ifdef __cplusplus
}
#endif

#endif /* HANDCUE_H */
