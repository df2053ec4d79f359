/*
 * weft_mpi: a small N-API addon over libmpi for weft's `mpi` process-group backend
 * (src/comm/mpi/binding.ts is its only user).
 *
 * Threading. Between MPI_Init_thread and MPI_Finalize (both on the JavaScript thread, the latter
 * after the progress thread has stopped), every MPI call but MPI_Abort is made by ONE progress
 * thread per process. JavaScript submits operations to a queue and gets a promise at once; the progress
 * thread issues them as nonblocking MPI calls (MPI_Iallreduce, MPI_Isend, ...) in submission
 * order, so the collectives on a communicator reach MPI in the same order on every rank (which
 * MPI requires), polls them with MPI_Test, and hands finished ones back to the JavaScript thread
 * through a thread-safe function that settles their promises. Because everything is nonblocking,
 * any number of operations can be in flight at once and an unmatched send never blocks later
 * ones: the semantics are those of an MPI program that issues I-calls and waits later. (A thread
 * per communicator making blocking calls would also keep the order, but a send waiting for its
 * receiver would hold up every later operation on that communicator.) The one blocking call is
 * MPI_Comm_split, which MPI has no nonblocking form of: operations issued before it keep
 * progressing inside it, later ones wait until every rank of the parent group has called split.
 * One thread needs only MPI_THREAD_SERIALIZED; we still request MPI_THREAD_MULTIPLE so that
 * MPI_Abort from the JavaScript thread (on a timeout) is legal while the progress thread is
 * inside MPI.
 *
 * Size checks ("validate"). Before a collective's own call, the progress thread all-gathers an
 * 8-word header (operation, sequence number, dtype, element count, root, reduce op) on the same
 * communicator; every rank compares all headers and, if they disagree, every rank fails the
 * operation with the same message naming both ranks and both values, and nothing hangs.
 * allToAllV adds a second all-gather of every rank's send and receive counts. Later collectives
 * on that communicator wait for the check (they are issued in order) but other communicators
 * and point-to-point operations do not. Receives always probe first (MPI_Improbe) and compare
 * the incoming size with the buffer; a message of the wrong size is drained into scratch memory
 * so the sender completes, and the receive fails naming both ranks and sizes.
 *
 * Polling. MPI only progresses inside MPI calls, and MPI cannot tell us that a transfer moved
 * (only that an operation finished), so the thread polls: it spins (sched_yield) for 200 us after
 * anything happened, then tests every 50 us, sleeping on a condition variable that a submission
 * signals. Measured on 2 cores, 2 ranks: waiting on a slow peer costs ~15% of a core; a small
 * all-reduce takes ~0.1 ms; a 64 MiB float32 all-reduce 0.15-0.2 s with single-copy (CMA), ~0.3-0.5 s
 * without. Backing off to longer sleeps saves CPU but stalls transfers that need many steps.
 *
 * Buffers are the caller's typed arrays; a reference to each is held until the operation has
 * settled, so they cannot be collected while MPI reads or writes them.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <dlfcn.h>
#include <mpi.h>
#include <node_api.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

/* Operation kinds: the order is shared with KINDS in src/comm/mpi/binding.ts. */
enum { K_ALLREDUCE, K_BCAST, K_REDUCE, K_ALLGATHER, K_REDUCE_SCATTER, K_GATHER, K_SCATTER,
       K_ALLTOALL, K_ALLTOALLV, K_BARRIER, K_SPLIT, K_FREE, K_SEND, K_RECV, K_COUNT };
static const char *const KIND_NAME[K_COUNT] = {
    "allReduce", "broadcast", "reduce", "allGather", "reduceScatter", "gather", "scatter",
    "allToAll", "allToAllV", "barrier", "split", "destroy", "send", "recv"};

enum { D_NONE, D_F32, D_F64, D_I32, D_COUNT };
static const char *const DTYPE_NAME[D_COUNT] = {"none", "float32", "float64", "int32"};
static const int DTYPE_SIZE[D_COUNT] = {0, 4, 8, 4};

/* Reduce ops as JS passes them; mean is a sum followed by a division by the group size. */
enum { R_SUM, R_MAX, R_MEAN, R_COUNT };
static const char *const REDOP_NAME[R_COUNT] = {"sum", "max", "mean"};

enum { S_QUEUED, S_CHECK, S_CHECK_V, S_PROBE, S_MAIN };
/* What a step returns. Once an operation is settled the JS thread may free it at any moment, so
 * the progress thread must not touch it again: every step says whether it still owns the op. */
enum { GONE, LIVE };
enum { FLAG_VALIDATE = 1 };
#define HDR_LEN 8

typedef struct op {
  struct op *next;
  int kind, comm, dtype, redop, validate;
  int64_t seq;
  int root, peer, tag, color, key;
  void *a, *b; /* a: input, or the buffer written in place; b: output */
  int na, nb;  /* element counts of a and b */
  int *counts; /* allToAllV: send counts, send displs, recv counts, recv displs (4 x size) */
  int ncounts; /* length of each of the four */
  /* progress-thread state */
  int stage;
  MPI_Request req;
  MPI_Message msg;
  int64_t hdr[HDR_LEN];
  int64_t *hdrs; /* every rank's header */
  int *vmine, *vall;
  void *scratch;
  char *err;
  int new_comm, new_rank, new_size; /* split result */
  int *new_world;
  /* JS-thread state */
  napi_deferred deferred;
  napi_ref ref_a, ref_b;
} op_t;

typedef struct {
  MPI_Comm comm;
  int rank, size, live;
  int *world;              /* world rank of each member */
  op_t *qhead, *qtail;     /* collectives not yet issued */
  op_t *checking;          /* the collective whose header check is in flight */
} comm_slot;

static comm_slot **g_comms; /* progress thread only (and JS thread while it is not running) */
static int g_ncomms, g_capcomms;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv;
static op_t *g_in_head, *g_in_tail;     /* submitted, not yet taken by the progress thread */
static op_t *g_done_head, *g_done_tail; /* settled, not yet taken by the JS thread */
static int g_notify_pending, g_stop;
static pthread_t g_thread;
static napi_threadsafe_function g_tsfn;
static napi_env g_env;
static int g_state;    /* 0 not initialized, 1 running, 2 finalized */
static int g_inflight; /* JS thread only: submitted and not yet settled */
/* See "Polling" above; WEFT_MPI_POLL_US="spin,min,max" overrides, e.g. "200,50,1000" backs off
 * to 1 ms sleeps while waiting (2% of a core instead of 15%) at the price of slow bulk transfers
 * without single-copy (64 MiB all-reduce, 2 ranks: 0.3 s -> 2 s). */
static long g_spin_us = 200, g_sleep_min_us = 50, g_sleep_max_us = 50;

/* ---------- helpers ---------- */

static char *fmt(const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  int n = vsnprintf(NULL, 0, f, ap);
  va_end(ap);
  char *s = malloc((size_t)n + 1);
  if (!s) return NULL;
  va_start(ap, f);
  vsnprintf(s, (size_t)n + 1, f, ap);
  va_end(ap);
  return s;
}

static char *mpi_error(int rc, const char *call) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "error %d", rc);
  return fmt("%s failed: %s", call, text);
}

static MPI_Datatype mpi_type(int d) {
  return d == D_F32 ? MPI_FLOAT : d == D_F64 ? MPI_DOUBLE : MPI_INT;
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static comm_slot *slot_of(int id) {
  return id >= 0 && id < g_ncomms && g_comms[id]->live ? g_comms[id] : NULL;
}

/* Registers a communicator and returns its handle, or -1 with *err set. */
static int add_comm(MPI_Comm comm, char **err) {
  comm_slot *s = calloc(1, sizeof *s);
  if (!s) { *err = fmt("out of memory"); return -1; }
  s->comm = comm;
  s->live = 1;
  MPI_Comm_rank(comm, &s->rank);
  MPI_Comm_size(comm, &s->size);
  s->world = malloc(sizeof(int) * (size_t)s->size);
  int *mine = malloc(sizeof(int) * (size_t)s->size);
  MPI_Group g, wg;
  MPI_Comm_group(comm, &g);
  MPI_Comm_group(MPI_COMM_WORLD, &wg);
  for (int i = 0; i < s->size; i++) mine[i] = i;
  MPI_Group_translate_ranks(g, s->size, mine, wg, s->world);
  MPI_Group_free(&g);
  MPI_Group_free(&wg);
  free(mine);
  if (g_ncomms == g_capcomms) {
    int cap = g_capcomms ? 2 * g_capcomms : 8;
    comm_slot **p = realloc(g_comms, sizeof *p * (size_t)cap);
    if (!p) { *err = fmt("out of memory"); free(s->world); free(s); return -1; }
    g_comms = p;
    g_capcomms = cap;
  }
  g_comms[g_ncomms] = s;
  return g_ncomms++;
}

static int world_rank(const comm_slot *s, int r) {
  return r >= 0 && r < s->size ? s->world[r] : r;
}

/* ---------- progress thread ---------- */

static int settle(op_t *op) {
  op->next = NULL;
  pthread_mutex_lock(&g_mu);
  if (g_done_tail) g_done_tail->next = op; else g_done_head = op;
  g_done_tail = op;
  int notify = !g_notify_pending;
  g_notify_pending = 1;
  pthread_mutex_unlock(&g_mu);
  if (notify) napi_call_threadsafe_function(g_tsfn, NULL, napi_tsfn_nonblocking);
  return GONE;
}

static int fail(op_t *op, char *err) {
  op->err = err ? err : fmt("out of memory");
  return settle(op);
}

/* The element count a collective's header carries, the one that must agree across ranks. */
static int header_count(const op_t *op) {
  switch (op->kind) {
    case K_SCATTER: return op->nb;
    case K_ALLTOALLV: case K_BARRIER: case K_SPLIT: case K_FREE: return 0;
    default: return op->na;
  }
}

static int is_rooted(int k) { return k == K_BCAST || k == K_REDUCE || k == K_GATHER || k == K_SCATTER; }
static int is_reduction(int k) { return k == K_ALLREDUCE || k == K_REDUCE || k == K_REDUCE_SCATTER; }

/* Compares every rank's header with rank 0's; the same message comes out on every rank. */
static char *check_headers(const op_t *op, const comm_slot *s) {
  const int64_t *h0 = op->hdrs;
  for (int r = 1; r < s->size; r++) {
    const int64_t *h = op->hdrs + (size_t)r * HDR_LEN;
    int w0 = s->world[0], wr = s->world[r];
    if (h[0] != h0[0] || h[1] != h0[1]) {
      const char *k0 = h0[0] >= 0 && h0[0] < K_COUNT ? KIND_NAME[h0[0]] : "?";
      const char *kr = h[0] >= 0 && h[0] < K_COUNT ? KIND_NAME[h[0]] : "?";
      return fmt("ranks disagree on the operation: rank %d called %s#%lld but rank %d called %s#%lld",
                 w0, k0, (long long)h0[1], wr, kr, (long long)h[1]);
    }
    if (h[2] != h0[2]) {
      const char *d0 = h0[2] >= 0 && h0[2] < D_COUNT ? DTYPE_NAME[h0[2]] : "?";
      const char *dr = h[2] >= 0 && h[2] < D_COUNT ? DTYPE_NAME[h[2]] : "?";
      return fmt("dtypes disagree: rank %d has %s but rank %d has %s", w0, d0, wr, dr);
    }
    if (h[3] != h0[3])
      return fmt("sizes disagree: rank %d has %lld elements but rank %d has %lld",
                 w0, (long long)h0[3], wr, (long long)h[3]);
    if (h[4] != h0[4])
      return fmt("roots disagree: rank %d gives root %lld but rank %d gives root %lld",
                 w0, (long long)h0[4], wr, (long long)h[4]);
    if (h[5] != h0[5]) {
      const char *o0 = h0[5] >= 0 && h0[5] < R_COUNT ? REDOP_NAME[h0[5]] : "?";
      const char *orr = h[5] >= 0 && h[5] < R_COUNT ? REDOP_NAME[h[5]] : "?";
      return fmt("reduce ops disagree: rank %d reduces with %s but rank %d with %s", w0, o0, wr, orr);
    }
  }
  return NULL;
}

/* allToAllV: rank i's send count to j must equal rank j's receive count from i. */
static char *check_counts(const op_t *op, const comm_slot *s) {
  int n = s->size;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      int sent = op->vall[(size_t)i * 2 * n + j];
      int expected = op->vall[(size_t)j * 2 * n + n + i];
      if (sent != expected)
        return fmt("sizes disagree: rank %d sends %d elements to rank %d but rank %d expects %d from rank %d",
                   s->world[i], sent, s->world[j], s->world[j], expected, s->world[i]);
    }
  return NULL;
}

static int start_check(op_t *op, comm_slot *s) {
  memset(op->hdr, 0, sizeof op->hdr);
  op->hdr[0] = op->kind;
  op->hdr[1] = op->seq;
  op->hdr[2] = op->dtype;
  op->hdr[3] = header_count(op);
  op->hdr[4] = is_rooted(op->kind) ? op->root : 0;
  op->hdr[5] = is_reduction(op->kind) ? op->redop : 0;
  op->hdrs = malloc(sizeof(int64_t) * HDR_LEN * (size_t)s->size);
  if (!op->hdrs) return fail(op, NULL);
  int rc = MPI_Iallgather(op->hdr, HDR_LEN, MPI_INT64_T, op->hdrs, HDR_LEN, MPI_INT64_T, s->comm, &op->req);
  if (rc != MPI_SUCCESS) return fail(op, mpi_error(rc, "MPI_Iallgather (size check)"));
  op->stage = S_CHECK;
  return LIVE;
}

static int start_check_counts(op_t *op, comm_slot *s) {
  int n = s->size;
  op->vmine = malloc(sizeof(int) * 2 * (size_t)n);
  op->vall = malloc(sizeof(int) * 2 * (size_t)n * (size_t)n);
  if (!op->vmine || !op->vall) return fail(op, NULL);
  memcpy(op->vmine, op->counts, sizeof(int) * (size_t)n);                 /* send counts */
  memcpy(op->vmine + n, op->counts + 2 * n, sizeof(int) * (size_t)n);     /* recv counts */
  int rc = MPI_Iallgather(op->vmine, 2 * n, MPI_INT, op->vall, 2 * n, MPI_INT, s->comm, &op->req);
  if (rc != MPI_SUCCESS) return fail(op, mpi_error(rc, "MPI_Iallgather (allToAllV counts check)"));
  op->stage = S_CHECK_V;
  return LIVE;
}

/* Issues the operation's own MPI call. Blocking ones (split, free) settle before returning. */
static int start_main(op_t *op, comm_slot *s) {
  MPI_Comm c = s->comm;
  MPI_Datatype t = mpi_type(op->dtype);
  MPI_Op mop = op->redop == R_MAX ? MPI_MAX : MPI_SUM;
  int rc = MPI_SUCCESS;
  const char *call = "";
  op->stage = S_MAIN;
  switch (op->kind) {
    case K_ALLREDUCE:
      call = "MPI_Iallreduce";
      rc = MPI_Iallreduce(MPI_IN_PLACE, op->a, op->na, t, mop, c, &op->req);
      break;
    case K_BCAST:
      call = "MPI_Ibcast";
      rc = MPI_Ibcast(op->a, op->na, t, op->root, c, &op->req);
      break;
    case K_REDUCE:
      call = "MPI_Ireduce";
      rc = s->rank == op->root ? MPI_Ireduce(MPI_IN_PLACE, op->a, op->na, t, mop, op->root, c, &op->req)
                               : MPI_Ireduce(op->a, NULL, op->na, t, mop, op->root, c, &op->req);
      break;
    case K_ALLGATHER:
      call = "MPI_Iallgather";
      rc = MPI_Iallgather(op->a, op->na, t, op->b, op->na, t, c, &op->req);
      break;
    case K_REDUCE_SCATTER:
      call = "MPI_Ireduce_scatter_block";
      rc = MPI_Ireduce_scatter_block(op->a, op->b, op->nb, t, mop, c, &op->req);
      break;
    case K_GATHER:
      call = "MPI_Igather";
      rc = MPI_Igather(op->a, op->na, t, op->b, op->na, t, op->root, c, &op->req);
      break;
    case K_SCATTER:
      call = "MPI_Iscatter";
      rc = MPI_Iscatter(op->a, op->nb, t, op->b, op->nb, t, op->root, c, &op->req);
      break;
    case K_ALLTOALL:
      call = "MPI_Ialltoall";
      rc = MPI_Ialltoall(op->a, op->na / s->size, t, op->b, op->na / s->size, t, c, &op->req);
      break;
    case K_ALLTOALLV: {
      int n = s->size;
      if (op->ncounts != n) return fail(op, fmt("allToAllV needs %d counts (the group size) but got %d", n, op->ncounts));
      call = "MPI_Ialltoallv";
      rc = MPI_Ialltoallv(op->a, op->counts, op->counts + n, t, op->b, op->counts + 2 * n,
                          op->counts + 3 * n, t, c, &op->req);
      break;
    }
    case K_BARRIER:
      call = "MPI_Ibarrier";
      rc = MPI_Ibarrier(c, &op->req);
      break;
    case K_SEND:
      call = "MPI_Isend";
      rc = MPI_Isend(op->a, op->na, t, op->peer, op->tag, c, &op->req);
      break;
    case K_SPLIT: {
      /* MPI has no nonblocking split; requests already issued keep progressing inside it. */
      MPI_Comm nc;
      rc = MPI_Comm_split(c, op->color, op->key, &nc);
      if (rc != MPI_SUCCESS) return fail(op, mpi_error(rc, "MPI_Comm_split"));
      char *err = NULL;
      op->new_comm = add_comm(nc, &err); /* may move g_comms, not the slots */
      if (op->new_comm < 0) return fail(op, err);
      comm_slot *ns = g_comms[op->new_comm];
      op->new_rank = ns->rank;
      op->new_size = ns->size;
      op->new_world = malloc(sizeof(int) * (size_t)ns->size);
      if (op->new_world) memcpy(op->new_world, ns->world, sizeof(int) * (size_t)ns->size);
      return settle(op);
    }
    case K_FREE:
      if (s->comm != MPI_COMM_WORLD) {
        rc = MPI_Comm_free(&s->comm);
        if (rc != MPI_SUCCESS) return fail(op, mpi_error(rc, "MPI_Comm_free"));
      }
      s->live = 0;
      return settle(op);
    default:
      return fail(op, fmt("unknown operation kind %d", op->kind));
  }
  return rc == MPI_SUCCESS ? LIVE : fail(op, mpi_error(rc, call));
}

/* The collective's check finished: run it, or fail it on every rank alike. Ends the check
 * unless a second one (allToAllV's counts) starts. */
static int after_check(op_t *op, comm_slot *s) {
  int first = op->stage == S_CHECK;
  char *err = first ? check_headers(op, s) : check_counts(op, s);
  if (!err && first && op->kind == K_ALLTOALLV) {
    int r = start_check_counts(op, s);
    if (r == GONE) s->checking = NULL;
    return r;
  }
  s->checking = NULL;
  return err ? fail(op, err) : start_main(op, s);
}

static void divide_by(void *p, int n, int dtype, int by) {
  if (dtype == D_F32) { float *x = p; for (int i = 0; i < n; i++) x[i] /= (float)by; }
  else if (dtype == D_F64) { double *x = p; for (int i = 0; i < n; i++) x[i] /= by; }
  else { int *x = p; for (int i = 0; i < n; i++) x[i] /= by; }
}

static int after_main(op_t *op, comm_slot *s) {
  if (op->redop == R_MEAN) {
    if (op->kind == K_ALLREDUCE) divide_by(op->a, op->na, op->dtype, s->size);
    else if (op->kind == K_REDUCE && s->rank == op->root) divide_by(op->a, op->na, op->dtype, s->size);
    else if (op->kind == K_REDUCE_SCATTER) divide_by(op->b, op->nb, op->dtype, s->size);
  }
  return settle(op); /* a recv of the wrong size carries its error already */
}

/* A receive whose message has arrived: receive it into the buffer, or drain it if its size is wrong. */
static int start_recv(op_t *op, comm_slot *s, MPI_Status *st) {
  int bytes = 0, es = DTYPE_SIZE[op->dtype];
  MPI_Get_count(st, MPI_BYTE, &bytes);
  int rc;
  op->stage = S_MAIN;
  if (bytes == op->na * es) {
    rc = MPI_Imrecv(op->a, op->na, mpi_type(op->dtype), &op->msg, &op->req);
  } else {
    op->scratch = malloc(bytes > 0 ? (size_t)bytes : 1);
    if (bytes % es == 0)
      op->err = fmt("sizes disagree: rank %d sent %d elements (tag %d) but rank %d expects %d",
                    world_rank(s, op->peer), bytes / es, op->tag, s->world[s->rank], op->na);
    else
      op->err = fmt("sizes disagree: rank %d sent %d bytes (tag %d) but rank %d expects %d %s elements",
                    world_rank(s, op->peer), bytes, op->tag, s->world[s->rank], op->na, DTYPE_NAME[op->dtype]);
    rc = MPI_Imrecv(op->scratch, bytes, MPI_BYTE, &op->msg, &op->req);
  }
  if (rc == MPI_SUCCESS) return LIVE;
  free(op->err);
  return fail(op, mpi_error(rc, "MPI_Imrecv"));
}

typedef struct { op_t **v; int n, cap; } oplist;

static int push(oplist *l, op_t *op) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 64;
    op_t **p = realloc(l->v, sizeof *p * (size_t)cap);
    if (!p) return 0;
    l->v = p;
    l->cap = cap;
  }
  l->v[l->n++] = op;
  return 1;
}

/* Issues a communicator's queued collectives in order, each after the previous one's check. */
static void advance(comm_slot *s, oplist *active) {
  while (s->live && !s->checking && s->qhead) {
    op_t *op = s->qhead;
    s->qhead = op->next;
    if (!s->qhead) s->qtail = NULL;
    op->next = NULL;
    int r;
    if (op->validate && s->size > 1) {
      r = start_check(op, s);
      if (r == LIVE) s->checking = op;
    } else {
      r = start_main(op, s);
    }
    if (r == LIVE && !push(active, op)) abort(); /* out of memory with an MPI request in flight */
  }
}

typedef struct { int comm, peer, tag; } probe_key;

static void *progress_main(void *arg) {
  (void)arg;
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* 1 us, so the 50 us sleeps are 50 us */
  oplist active = {0};
  probe_key *missed = NULL;
  int nmissed = 0, capmissed = 0;
  double last_event = now_us();
  long sleep_us = g_sleep_min_us;
  for (;;) {
    pthread_mutex_lock(&g_mu);
    op_t *in = g_in_head;
    g_in_head = g_in_tail = NULL;
    int stop = g_stop;
    pthread_mutex_unlock(&g_mu);

    int progressed = in != NULL;
    for (op_t *op = in, *next; op; op = next) {
      next = op->next;
      op->next = NULL;
      comm_slot *s = slot_of(op->comm);
      if (!s) { fail(op, fmt("communicator %d was destroyed", op->comm)); continue; }
      if (op->kind == K_SEND || op->kind == K_RECV) {
        /* Point-to-point bypasses the collective queue: MPI does not order it against collectives. */
        int r = LIVE;
        if (op->kind == K_SEND) r = start_main(op, s); else op->stage = S_PROBE;
        if (r == LIVE && !push(&active, op)) abort(); /* out of memory with an MPI request in flight */
      } else {
        if (s->qtail) s->qtail->next = op; else s->qhead = op;
        s->qtail = op;
      }
    }
    for (int i = 0; i < g_ncomms; i++) advance(g_comms[i], &active);

    nmissed = 0;
    int kept = 0;
    for (int i = 0; i < active.n; i++) {
      op_t *op = active.v[i];
      comm_slot *s = g_comms[op->comm]; /* live: a free waits behind every earlier collective */
      if (op->stage == S_PROBE) {
        int skip = 0;
        for (int m = 0; m < nmissed; m++)
          if (missed[m].comm == op->comm && missed[m].peer == op->peer && missed[m].tag == op->tag) skip = 1;
        if (!skip) {
          int flag = 0;
          MPI_Status st;
          int rc = MPI_Improbe(op->peer, op->tag, s->comm, &flag, &op->msg, &st);
          if (rc != MPI_SUCCESS) { fail(op, mpi_error(rc, "MPI_Improbe")); progressed = 1; continue; }
          if (flag) {
            progressed = 1;
            if (start_recv(op, s, &st) == GONE) continue;
          } else {
            /* Later receives from the same peer and tag must not overtake this one. */
            if (nmissed == capmissed) {
              capmissed = capmissed ? 2 * capmissed : 16;
              missed = realloc(missed, sizeof *missed * (size_t)capmissed);
              if (!missed) abort();
            }
            missed[nmissed++] = (probe_key){op->comm, op->peer, op->tag};
          }
        }
        active.v[kept++] = op;
        continue;
      }
      int flag = 0;
      int rc = MPI_Test(&op->req, &flag, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) {
        if (s->checking == op) s->checking = NULL;
        fail(op, mpi_error(rc, "MPI_Test"));
        progressed = 1;
        continue;
      }
      if (!flag) { active.v[kept++] = op; continue; }
      progressed = 1;
      int r = op->stage == S_MAIN ? after_main(op, s) : after_check(op, s);
      if (r == LIVE) active.v[kept++] = op;
    }
    active.n = kept;
    /* Collectives freed by finished checks; new entries are appended and polled next pass. */
    for (int i = 0; i < g_ncomms; i++) advance(g_comms[i], &active);

    if (progressed) { last_event = now_us(); continue; }
    if (active.n == 0) {
      if (stop) break;
      pthread_mutex_lock(&g_mu);
      while (!g_in_head && !g_stop) pthread_cond_wait(&g_cv, &g_mu);
      pthread_mutex_unlock(&g_mu);
      last_event = now_us();
    } else if (now_us() - last_event < g_spin_us) {
      sched_yield();
      sleep_us = g_sleep_min_us;
    } else {
      struct timespec t;
      clock_gettime(CLOCK_MONOTONIC, &t);
      t.tv_nsec += sleep_us * 1000;
      sleep_us = sleep_us * 2 > g_sleep_max_us ? g_sleep_max_us : sleep_us * 2;
      if (t.tv_nsec >= 1000000000L) { t.tv_sec++; t.tv_nsec -= 1000000000L; }
      pthread_mutex_lock(&g_mu);
      if (!g_in_head && !g_stop) pthread_cond_timedwait(&g_cv, &g_mu, &t);
      pthread_mutex_unlock(&g_mu);
    }
  }
  free(active.v);
  free(missed);
  return NULL;
}

/* ---------- JS thread ---------- */

#define CHECK(call)                                                          \
  do {                                                                       \
    if ((call) != napi_ok) {                                                 \
      napi_throw_error(env, NULL, "weft_mpi: N-API call failed: " #call);    \
      return NULL;                                                           \
    }                                                                        \
  } while (0)

static napi_value throw_error(napi_env env, const char *msg) {
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static void free_op(napi_env env, op_t *op) {
  if (env && op->ref_a) napi_delete_reference(env, op->ref_a);
  if (env && op->ref_b) napi_delete_reference(env, op->ref_b);
  free(op->counts);
  free(op->hdrs);
  free(op->vmine);
  free(op->vall);
  free(op->scratch);
  free(op->err);
  free(op->new_world);
  free(op);
}

static napi_value split_result(napi_env env, const op_t *op) {
  napi_value res, v, ranks;
  if (napi_create_object(env, &res) != napi_ok) return NULL;
  napi_create_int32(env, op->new_comm, &v);
  napi_set_named_property(env, res, "handle", v);
  napi_create_int32(env, op->new_rank, &v);
  napi_set_named_property(env, res, "rank", v);
  napi_create_int32(env, op->new_size, &v);
  napi_set_named_property(env, res, "size", v);
  napi_create_array_with_length(env, (size_t)op->new_size, &ranks);
  for (int i = 0; op->new_world && i < op->new_size; i++) {
    napi_create_int32(env, op->new_world[i], &v);
    napi_set_element(env, ranks, (uint32_t)i, v);
  }
  napi_set_named_property(env, res, "worldRanks", ranks);
  return res;
}

/* Runs on the JS thread: settles the promises of every finished operation. */
static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  (void)cb; (void)ctx; (void)data;
  pthread_mutex_lock(&g_mu);
  op_t *list = g_done_head;
  g_done_head = g_done_tail = NULL;
  g_notify_pending = 0;
  pthread_mutex_unlock(&g_mu);
  for (op_t *op = list, *next; op; op = next) {
    next = op->next;
    if (env) {
      napi_handle_scope scope;
      napi_open_handle_scope(env, &scope);
      if (op->err) {
        napi_value msg, e;
        napi_create_string_utf8(env, op->err, NAPI_AUTO_LENGTH, &msg);
        napi_create_error(env, NULL, msg, &e);
        napi_reject_deferred(env, op->deferred, e);
      } else {
        napi_value v = NULL;
        if (op->kind == K_SPLIT) v = split_result(env, op);
        if (!v) napi_get_undefined(env, &v);
        napi_resolve_deferred(env, op->deferred, v);
      }
      napi_close_handle_scope(env, scope);
    }
    free_op(env, op);
    if (--g_inflight == 0 && env) napi_unref_threadsafe_function(env, g_tsfn);
  }
}

/* Reads a typed array (or null/undefined -> NULL). */
static int read_array(napi_env env, napi_value v, void **data, int *n, int *dtype, napi_ref *ref) {
  napi_valuetype vt;
  if (napi_typeof(env, v, &vt) != napi_ok) return 0;
  if (vt == napi_null || vt == napi_undefined) { *data = NULL; *n = 0; return 1; }
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta) { napi_throw_type_error(env, NULL, "weft_mpi: expected a Float32Array, Float64Array or Int32Array"); return 0; }
  napi_typedarray_type type;
  size_t length;
  napi_value ab;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, &length, data, &ab, &offset) != napi_ok) return 0;
  int d = type == napi_float32_array ? D_F32 : type == napi_float64_array ? D_F64 : type == napi_int32_array ? D_I32 : D_NONE;
  if (d == D_NONE) { napi_throw_type_error(env, NULL, "weft_mpi: expected a Float32Array, Float64Array or Int32Array"); return 0; }
  if (length > INT32_MAX) { napi_throw_range_error(env, NULL, "weft_mpi: arrays of more than 2^31-1 elements are not supported"); return 0; }
  if (*dtype != D_NONE && *dtype != d) { napi_throw_type_error(env, NULL, "weft_mpi: input and output arrays have different element types"); return 0; }
  *dtype = d;
  *n = (int)length;
  return napi_create_reference(env, v, 1, ref) == napi_ok;
}

/*
 * submit(kind, comm, seq, flags, a, b, x, y, counts) -> Promise
 *   x: root (rooted collectives), peer (send/recv) or color (split)
 *   y: reduce op (reductions), tag (send/recv) or key (split)
 *   counts: allToAllV only, an Int32Array [sendCounts..., recvCounts...] (2 x group size)
 */
static napi_value js_submit(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (g_state != 1 || env != g_env) return throw_error(env, "weft_mpi: MPI is not initialized (or was finalized) in this thread");
  if (argc < 8) return throw_error(env, "weft_mpi: submit needs 8 or 9 arguments");
  op_t *op = calloc(1, sizeof *op);
  if (!op) return throw_error(env, "weft_mpi: out of memory");
  int flags = 0, x = 0, y = 0;
  napi_get_value_int32(env, argv[0], &op->kind);
  napi_get_value_int32(env, argv[1], &op->comm);
  napi_get_value_int64(env, argv[2], &op->seq);
  napi_get_value_int32(env, argv[3], &flags);
  napi_get_value_int32(env, argv[6], &x);
  napi_get_value_int32(env, argv[7], &y);
  op->validate = flags & FLAG_VALIDATE;
  if (op->kind < 0 || op->kind >= K_COUNT) { free(op); return throw_error(env, "weft_mpi: unknown operation kind"); }
  if (!read_array(env, argv[4], &op->a, &op->na, &op->dtype, &op->ref_a) ||
      !read_array(env, argv[5], &op->b, &op->nb, &op->dtype, &op->ref_b)) {
    free_op(env, op);
    return NULL;
  }
  op->root = op->peer = op->color = x;
  op->redop = op->tag = op->key = y;
  if (!is_reduction(op->kind)) op->redop = R_SUM;
  if (op->redop < 0 || op->redop >= R_COUNT) { free_op(env, op); return throw_error(env, "weft_mpi: unknown reduce op"); }
  if (op->kind == K_ALLTOALLV) {
    int *c = NULL, n = 0, d = D_NONE;
    napi_ref r = NULL;
    if (argc < 9 || !read_array(env, argv[8], (void **)&c, &n, &d, &r)) { free_op(env, op); return NULL; }
    if (r) napi_delete_reference(env, r);
    if (d != D_I32 || n % 2) { free_op(env, op); return throw_error(env, "weft_mpi: allToAllV counts must be an Int32Array of 2 x size"); }
    int size = n / 2;
    op->ncounts = size;
    op->counts = malloc(sizeof(int) * 4 * (size_t)(size ? size : 1));
    if (!op->counts) { free_op(env, op); return throw_error(env, "weft_mpi: out of memory"); }
    /* Layout: send counts, send displs, recv counts, recv displs. */
    int sd = 0, rd = 0;
    for (int j = 0; j < size; j++) {
      op->counts[j] = c[j];
      op->counts[size + j] = sd;
      op->counts[2 * size + j] = c[size + j];
      op->counts[3 * size + j] = rd;
      sd += c[j];
      rd += c[size + j];
    }
  }
  napi_value promise;
  if (napi_create_promise(env, &op->deferred, &promise) != napi_ok) { free_op(env, op); return throw_error(env, "weft_mpi: napi_create_promise failed"); }
  if (g_inflight++ == 0) napi_ref_threadsafe_function(env, g_tsfn);
  pthread_mutex_lock(&g_mu);
  if (g_in_tail) g_in_tail->next = op; else g_in_head = op;
  g_in_tail = op;
  pthread_cond_signal(&g_cv);
  pthread_mutex_unlock(&g_mu);
  return promise;
}

static const char *thread_level_name(int p) {
  return p == MPI_THREAD_MULTIPLE ? "multiple" : p == MPI_THREAD_SERIALIZED ? "serialized"
       : p == MPI_THREAD_FUNNELED ? "funneled" : "single";
}

/*
 * libmpi loads its components (mca_*.so) with dlopen, and they need libmpi's and libopen-pal's
 * symbols; Node loads addons RTLD_LOCAL, so promote the library to the global namespace first.
 */
static void promote_libmpi(void) {
  Dl_info di;
  if (dladdr((void *)&MPI_Init_thread, &di) && di.dli_fname) dlopen(di.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
}

/* init() -> { rank, size, world, threadLevel } */
static napi_value js_init(napi_env env, napi_callback_info info) {
  (void)info;
  if (g_state == 1) return throw_error(env, "weft_mpi: MPI is already initialized in this process");
  if (g_state == 2) return throw_error(env, "weft_mpi: MPI was finalized and cannot be initialized again");
  promote_libmpi();
  const char *poll = getenv("WEFT_MPI_POLL_US"); /* "spin,min,max" for experiments */
  if (poll) sscanf(poll, "%ld,%ld,%ld", &g_spin_us, &g_sleep_min_us, &g_sleep_max_us);
  int provided = 0, already = 0;
  MPI_Initialized(&already);
  if (already) MPI_Query_thread(&provided);
  else if (MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
    return throw_error(env, "weft_mpi: MPI_Init_thread failed");
  if (provided < MPI_THREAD_SERIALIZED) {
    char msg[200];
    snprintf(msg, sizeof msg, "weft_mpi: this MPI provides only MPI_THREAD_%s; the backend needs at least MPI_THREAD_SERIALIZED",
             provided == MPI_THREAD_FUNNELED ? "FUNNELED" : "SINGLE");
    MPI_Finalize();
    g_state = 2;
    return throw_error(env, msg);
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  char *err = NULL;
  int world = add_comm(MPI_COMM_WORLD, &err);
  if (world < 0) { free(err); return throw_error(env, "weft_mpi: out of memory"); }

  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&g_cv, &ca);
  pthread_condattr_destroy(&ca);

  napi_value name;
  CHECK(napi_create_string_utf8(env, "weft_mpi", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, call_js, &g_tsfn));
  CHECK(napi_unref_threadsafe_function(env, g_tsfn)); /* referenced only while operations are in flight */
  g_stop = 0;
  if (pthread_create(&g_thread, NULL, progress_main, NULL) != 0) return throw_error(env, "weft_mpi: cannot start the progress thread");
  g_env = env;
  g_state = 1;

  napi_value res, v;
  CHECK(napi_create_object(env, &res));
  CHECK(napi_create_int32(env, g_comms[world]->rank, &v));
  CHECK(napi_set_named_property(env, res, "rank", v));
  CHECK(napi_create_int32(env, g_comms[world]->size, &v));
  CHECK(napi_set_named_property(env, res, "size", v));
  CHECK(napi_create_int32(env, world, &v));
  CHECK(napi_set_named_property(env, res, "world", v));
  CHECK(napi_create_string_utf8(env, thread_level_name(provided), NAPI_AUTO_LENGTH, &v));
  CHECK(napi_set_named_property(env, res, "threadLevel", v));
  return res;
}

/* finalize(): stops the progress thread and calls MPI_Finalize. Every operation must have settled. */
static napi_value js_finalize(napi_env env, napi_callback_info info) {
  (void)info;
  if (g_state != 1) return NULL;
  if (g_inflight > 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "weft_mpi: cannot finalize with %d operation(s) in flight", g_inflight);
    return throw_error(env, msg);
  }
  pthread_mutex_lock(&g_mu);
  g_stop = 1;
  pthread_cond_signal(&g_cv);
  pthread_mutex_unlock(&g_mu);
  pthread_join(g_thread, NULL);
  for (int i = 0; i < g_ncomms; i++) {
    comm_slot *s = g_comms[i];
    if (s->live && s->comm != MPI_COMM_WORLD) MPI_Comm_free(&s->comm);
    free(s->world);
    free(s);
  }
  free(g_comms);
  g_comms = NULL;
  g_ncomms = g_capcomms = 0;
  MPI_Finalize();
  napi_release_threadsafe_function(g_tsfn, napi_tsfn_release);
  g_state = 2;
  return NULL;
}

/* abort(code): MPI_Abort on the world communicator; mpirun then ends every rank. Never returns. */
static napi_value js_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int code = 1;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1) napi_get_value_int32(env, argv[0], &code);
  fflush(stdout);
  fflush(stderr);
  if (g_state == 1) MPI_Abort(MPI_COMM_WORLD, code);
  _exit(code);
}

/* libraryVersion(): MPI_Get_library_version, callable before init. */
static napi_value js_library_version(napi_env env, napi_callback_info info) {
  (void)info;
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(v, &len);
  napi_value s;
  CHECK(napi_create_string_utf8(env, v, (size_t)len, &s));
  return s;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"init", NULL, js_init, NULL, NULL, NULL, napi_default, NULL},
      {"finalize", NULL, js_finalize, NULL, NULL, NULL, napi_default, NULL},
      {"abort", NULL, js_abort, NULL, NULL, NULL, napi_default, NULL},
      {"submit", NULL, js_submit, NULL, NULL, NULL, napi_default, NULL},
      {"libraryVersion", NULL, js_library_version, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
