/* dbward.audit._syncer: the audit journal's background fsync, in a thread that never takes
 * the GIL.
 *
 * With durability "write", a record is in the OS when its statement goes on, and the journal
 * is fsynced within audit.fsync_interval_ms for all records written since. Done from Python
 * (asyncio.to_thread(os.fsync) every few ms), each fsync made the worker thread compete with
 * the event loop for the GIL: tens of futex calls and a dozen context switches per fsync,
 * 13-18 % of the proxy's CPU under load. Here the event loop only bumps a counter after each
 * write (note_write, an atomic add); a POSIX thread waits the interval, calls fsync(2) and
 * records how far it got or the errno of a failure, which the journal reads (``error``) to
 * fail closed.
 *
 * Optional, like dbward.wire._speedups: without it the journal uses the Python path, with the
 * same guarantees. The thread:
 *   - sleeps (parked on a condition variable) while nothing is written;
 *   - once woken by a write, waits the interval so that the writes of that time share one
 *     fsync, then fsyncs everything written up to that moment;
 *   - after a failed fsync, syncs no more (the journal refuses statements from then on);
 *   - on close, syncs what is still unsynced and ends; close() joins it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD
    int fd; /* a dup() of the journal's descriptor, closed when the thread ends */
    struct timespec interval;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;    /* mutex and condition variable initialised */
    int running;  /* the thread runs and is not joined yet (touched with the GIL only) */
    int stopping; /* under mu */
    atomic_int parked;
    atomic_ullong writes; /* bumped after every write */
    atomic_ullong synced; /* writes covered by the last successful fsync */
    atomic_ullong syncs;  /* fsync calls made */
    atomic_int error;     /* errno of the first failed fsync, 0 while none failed */
} Syncer;

static void deadline_after(const struct timespec *interval, struct timespec *out) {
    clock_gettime(CLOCK_MONOTONIC, out);
    out->tv_sec += interval->tv_sec;
    out->tv_nsec += interval->tv_nsec;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec += 1;
        out->tv_nsec -= 1000000000L;
    }
}

static void *syncer_run(void *arg) {
    Syncer *s = (Syncer *)arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        unsigned long long w = atomic_load(&s->writes);
        if (atomic_load(&s->error) != 0 || w == atomic_load(&s->synced)) {
            if (s->stopping)
                break;
            /* Park. parked is set before writes is read again, and note_write adds before it
             * reads parked (both sequentially consistent): either this sees the new write or
             * the writer sees parked and signals under the mutex, which this holds until the
             * wait releases it. */
            atomic_store(&s->parked, 1);
            if (!s->stopping && (atomic_load(&s->error) != 0 || atomic_load(&s->writes) == w))
                pthread_cond_wait(&s->cv, &s->mu);
            atomic_store(&s->parked, 0);
            continue;
        }
        /* the writes of the next interval share this fsync; closing cuts the wait short */
        struct timespec deadline;
        deadline_after(&s->interval, &deadline);
        while (!s->stopping && pthread_cond_timedwait(&s->cv, &s->mu, &deadline) != ETIMEDOUT) {
        }
        w = atomic_load(&s->writes);
        pthread_mutex_unlock(&s->mu);
        int rc;
        do {
            rc = fsync(s->fd);
        } while (rc != 0 && errno == EINTR);
        int err = rc == 0 ? 0 : errno;
        pthread_mutex_lock(&s->mu);
        atomic_fetch_add(&s->syncs, 1);
        if (err != 0)
            atomic_store(&s->error, err);
        else
            atomic_store(&s->synced, w);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int Syncer_init(Syncer *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "interval", NULL};
    int fd;
    double interval;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "id", kwlist, &fd, &interval))
        return -1;
    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "a Syncer is initialised once");
        return -1;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "fd must be an open file descriptor");
        return -1;
    }
    if (!(interval > 0.0 && interval <= 3600.0)) {
        PyErr_SetString(PyExc_ValueError, "interval must be between 0 and 3600 seconds");
        return -1;
    }
    /* A descriptor of its own: the journal may close or replace its one at any time, and
     * the number must never come to mean another file while this thread syncs it. */
    self->fd = -1;
    self->interval.tv_sec = (time_t)interval;
    self->interval.tv_nsec = (long)((interval - (double)self->interval.tv_sec) * 1e9);
    atomic_init(&self->parked, 0);
    atomic_init(&self->writes, 0);
    atomic_init(&self->synced, 0);
    atomic_init(&self->syncs, 0);
    atomic_init(&self->error, 0);
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0 || pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0) {
        PyErr_SetString(PyExc_OSError, "cannot set up the journal syncer's condition variable");
        return -1;
    }
    int rc = pthread_cond_init(&self->cv, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0 || pthread_mutex_init(&self->mu, NULL) != 0) {
        PyErr_SetString(PyExc_OSError, "cannot set up the journal syncer's mutex");
        return -1;
    }
    self->ready = 1;
    self->stopping = 0;
    self->fd = dup(fd);
    if (self->fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    /* The thread starts with every signal blocked: signals are the main thread's business
     * (Python runs its handlers there), and none may interrupt an fsync. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&self->thread, NULL, syncer_run, self);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        close(self->fd);
        self->fd = -1;
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->running = 1;
    return 0;
}

/* Stop the thread after it synced what is unsynced, and wait for it. The GIL is released
 * while waiting when the caller holds it and may (not during deallocation). */
static void syncer_stop(Syncer *self, int release_gil) {
    if (!self->running)
        return;
    pthread_mutex_lock(&self->mu);
    self->stopping = 1;
    pthread_cond_signal(&self->cv);
    pthread_mutex_unlock(&self->mu);
    if (release_gil) {
        Py_BEGIN_ALLOW_THREADS
        pthread_join(self->thread, NULL);
        Py_END_ALLOW_THREADS
    } else {
        pthread_join(self->thread, NULL);
    }
    self->running = 0;
    close(self->fd);
    self->fd = -1;
}

static PyObject *Syncer_note_write(Syncer *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->running) {
        PyErr_SetString(PyExc_ValueError, "the journal syncer is closed");
        return NULL;
    }
    atomic_fetch_add(&self->writes, 1);
    if (atomic_load(&self->parked)) {
        pthread_mutex_lock(&self->mu);
        pthread_cond_signal(&self->cv);
        pthread_mutex_unlock(&self->mu);
    }
    Py_RETURN_NONE;
}

static PyObject *Syncer_close(Syncer *self, PyObject *Py_UNUSED(ignored)) {
    syncer_stop(self, 1);
    return PyLong_FromLong(atomic_load(&self->error));
}

static void Syncer_dealloc(Syncer *self) {
    syncer_stop(self, 0);
    if (self->ready) {
        pthread_cond_destroy(&self->cv);
        pthread_mutex_destroy(&self->mu);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Syncer_get_error(Syncer *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(atomic_load(&self->error));
}

static PyObject *Syncer_get_writes(Syncer *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(atomic_load(&self->writes));
}

static PyObject *Syncer_get_synced(Syncer *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(atomic_load(&self->synced));
}

static PyObject *Syncer_get_syncs(Syncer *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(atomic_load(&self->syncs));
}

static PyObject *Syncer_get_running(Syncer *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(self->running);
}

static PyMethodDef Syncer_methods[] = {
    {"note_write", (PyCFunction)Syncer_note_write, METH_NOARGS,
     "Note that records were written; they are fsynced within the interval."},
    {"close", (PyCFunction)Syncer_close, METH_NOARGS,
     "Sync what is unsynced, stop the thread and wait for it; returns error."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Syncer_getset[] = {
    {"error", (getter)Syncer_get_error, NULL, "errno of the first failed fsync; 0 while none failed", NULL},
    {"writes", (getter)Syncer_get_writes, NULL, "writes noted", NULL},
    {"synced", (getter)Syncer_get_synced, NULL, "writes covered by the last successful fsync", NULL},
    {"syncs", (getter)Syncer_get_syncs, NULL, "fsync calls made", NULL},
    {"running", (getter)Syncer_get_running, NULL, "whether the thread runs (False once closed)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SyncerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dbward.audit._syncer.Syncer",
    .tp_doc = PyDoc_STR("Syncer(fd, interval): fsync(fd) in a thread of its own, within interval "
                        "seconds of each noted write."),
    .tp_basicsize = sizeof(Syncer),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Syncer_init,
    .tp_dealloc = (destructor)Syncer_dealloc,
    .tp_methods = Syncer_methods,
    .tp_getset = Syncer_getset,
};

static struct PyModuleDef syncer_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "dbward.audit._syncer",
    .m_doc = PyDoc_STR("The audit journal's background fsync, in a thread that never takes the GIL."),
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__syncer(void) {
    if (PyType_Ready(&SyncerType) < 0)
        return NULL;
    PyObject *mod = PyModule_Create(&syncer_module);
    if (mod == NULL)
        return NULL;
    Py_INCREF(&SyncerType);
    if (PyModule_AddObject(mod, "Syncer", (PyObject *)&SyncerType) < 0) {
        Py_DECREF(&SyncerType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
