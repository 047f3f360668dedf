/*
 * dbward.wire._speedups: the one loop of the relay that runs once per result row.
 *
 * A result of a million rows is a million PostgreSQL DataRow frames, and the relay must find
 * where each ends (to find the CommandComplete after them and to count the rows). In Python
 * that walk costs about 0.15 us per frame, most of the proxy's CPU time during a large
 * result; here it costs a few nanoseconds. Counterpart and reference implementation:
 * dbward/wire/postgres/framing.py (data_rows), which is used when this module is not built
 * and which the tests compare this one with.
 *
 * Frame layout: Byte1 type | Int32 length (counting itself, not the type byte) | body
 * https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* data_rows(buf, pos, end, max_length) -> (pos, rows)
 *
 * Walks the complete DataRow ('D') frames of buf[pos:end] that follow each other from pos,
 * and returns the position after the last of them and how many there were. Stops, without
 * consuming it, at a frame of another type, an incomplete frame, a frame whose length is
 * below 4 or above max_length, or fewer than 5 bytes before end. */
static PyObject *
data_rows(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, end;
    unsigned long long max_length;
    if (!PyArg_ParseTuple(args, "y*nnK", &view, &pos, &end, &max_length)) {
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)view.buf;
    if (end > view.len) {
        end = view.len;
    }
    if (pos < 0) {
        pos = 0;
    }
    Py_ssize_t rows = 0;
    while (end - pos >= 5 && b[pos] == 'D') {
        uint32_t length = ((uint32_t)b[pos + 1] << 24) | ((uint32_t)b[pos + 2] << 16) |
                          ((uint32_t)b[pos + 3] << 8) | (uint32_t)b[pos + 4];
        if (length < 4 || (unsigned long long)length > max_length) {
            break;
        }
        if ((Py_ssize_t)length >= end - pos) { /* the frame is 1 + length bytes */
            break;
        }
        pos += 1 + (Py_ssize_t)length;
        rows++;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("nn", pos, rows);
}

static PyMethodDef methods[] = {
    {"data_rows", data_rows, METH_VARARGS,
     "data_rows(buf, pos, end, max_length) -> (pos, rows): skip the complete DataRow frames "
     "from pos."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "The per-row frame walk of the PostgreSQL relay, in C (see wire/postgres/framing.py).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
