/*
 * dbward.wire._speedups: the loops of the relay that run once per result row.
 *
 * A result of a million rows is a million PostgreSQL DataRow frames (or MySQL text-row
 * packets), and the relay must find where each ends (to find the CommandComplete after them
 * and to count the rows), and mask a column of each when a masking rule says so. In Python
 * that costs about 0.15 us per frame to walk and 0.7 us per row to mask, most of the proxy's
 * CPU time during a large result; here it costs a few nanoseconds. Every function has a
 * Python reference that is used when this module is not built and that the tests compare it
 * with: dbward/wire/postgres/framing.py (data_rows_py), proxy/postgres_masking.py
 * (RowMasker.rows) and proxy/mysql_masking.py (ColumnMasker.text_rows).
 *
 * PostgreSQL frame: Byte1 type | Int32 length (counting itself, not the type byte) | body
 * https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS
 * MySQL packet: Int3 payload length | Int1 sequence id | payload; a text row is one
 * length-encoded string (or 0xFB, NULL) per column
 * https://mariadb.com/kb/en/resultset-row/
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

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

/* ------------------------------------------------------------------ span masks, shared */

static inline int32_t
be32s(const unsigned char *b)
{
    return (int32_t)(((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) |
                     (uint32_t)b[3]);
}

static inline int
all_ascii(const unsigned char *v, Py_ssize_t length)
{
    for (Py_ssize_t j = 0; j < length; j++) {
        if (v[j] >= 0x80) {
            return 0;
        }
    }
    return 1;
}

/* [start, end) of the caller's positions kept inside the buffer and non-negative, start <= end */
static void
clamp_range(Py_ssize_t *start, Py_ssize_t *end, Py_ssize_t len)
{
    if (*end > len) {
        *end = len;
    }
    if (*start < 0) {
        *start = 0;
    }
    if (*start > *end) {
        *start = *end;
    }
}

/* The arguments both span loops share: the masked column, the mask and the separators it
 * keeps (marked in is_sep). Returns 0, with a ValueError set, when they are out of range. */
static int
span_arguments(const char *name, Py_ssize_t k, Py_ssize_t first, Py_ssize_t last, int unit,
               const char *seps, Py_ssize_t nseps, unsigned char is_sep[256])
{
    if (k < 0 || first < 0 || last < 0 || unit < 0 || unit > 255) {
        PyErr_Format(PyExc_ValueError, "%s: k, first, last and unit must be in range", name);
        return 0;
    }
    memset(is_sep, 0, 256);
    for (Py_ssize_t i = 0; i < nseps; i++) {
        is_sep[(unsigned char)seps[i]] = 1;
    }
    return 1;
}

/* Mask one ASCII value in place: of its significant bytes (those not marked in is_sep, which
 * stay where they are; none are marked when nseps is 0) the first `first` and the last `last`
 * stay, unless that would keep all of them, and every other one becomes `unit`. This is
 * dbward.masking.algorithms.partial on ASCII text, whose bytes are its characters. */
static void
mask_value(unsigned char *v, Py_ssize_t length, Py_ssize_t first, Py_ssize_t last, unsigned char unit,
           const unsigned char *is_sep, Py_ssize_t nseps)
{
    Py_ssize_t significant = length;
    if (nseps) {
        for (Py_ssize_t j = 0; j < length; j++) {
            significant -= is_sep[v[j]];
        }
    }
    Py_ssize_t low = first, high = significant - last; /* the significant bytes masked */
    if (first + last >= significant) {
        low = 0;
        high = significant;
    }
    if (significant == length) {
        memset(v + low, unit, (size_t)(high - low));
        return;
    }
    Py_ssize_t c = 0;
    for (Py_ssize_t j = 0; j < length; j++) {
        if (is_sep[v[j]]) {
            continue;
        }
        if (c >= low && c < high) {
            v[j] = unit;
        }
        c++;
    }
}

/* A new bytes object holding b[start:stop], the run of rows the second pass masks in place. */
static PyObject *
copy_run(const unsigned char *b, Py_ssize_t start, Py_ssize_t stop, unsigned char **out)
{
    PyObject *run = PyBytes_FromStringAndSize(NULL, stop - start);
    if (run == NULL) {
        return NULL;
    }
    *out = (unsigned char *)PyBytes_AS_STRING(run);
    memcpy(*out, b + start, (size_t)(stop - start));
    return run;
}

/* ------------------------------------------------------------------ PostgreSQL DataRows */

/* Where column k's Int32 length field starts in the DataRow frame at b[p], which ends at e
 * (its first one is at p + 7); -1 when the row ends before it. */
static Py_ssize_t
pg_column(const unsigned char *b, Py_ssize_t p, Py_ssize_t e, Py_ssize_t k)
{
    Py_ssize_t pos = p + 7;
    for (Py_ssize_t i = 0; i < k; i++) {
        int32_t length = be32s(b + pos);
        pos += 4 + (length > 0 ? (Py_ssize_t)length : 0);
        if (pos + 4 > e) {
            return -1;
        }
    }
    return pos;
}

/* mask_span_rows(buf, start, end, limit, k, first, last, unit, separators)
 *     -> (frames, pos, rows)
 *
 * The common case of a masked result, in C: one masked column (index k) with a full or
 * partial mask (proxy/masking.py SpanMask) over ASCII values, masked by mask_value (so the
 * value and the frame keep their lengths); `separators` is SEPARATOR_BYTES when the mask
 * keeps separators, otherwise empty.
 *
 * Masks the run of DataRow frames from buf[start] exactly as RowMasker.rows
 * (proxy/postgres_masking.py) does, and stops, without consuming it, at the first frame it
 * leaves to that Python loop: a frame that is not a DataRow or does not end by `end`, a row
 * with k columns or fewer or a body under 6 bytes, a truncated row, and a value that is not
 * ASCII. Stops after `limit` rows (negative: no limit). Returns the masked frames, the
 * position after the last row taken and how many rows were taken. */
static PyObject *
mask_span_rows(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, end, limit, k, first, last;
    int unit;
    const char *seps;
    Py_ssize_t nseps;
    unsigned char is_sep[256];
    if (!PyArg_ParseTuple(args, "y*nnnnnniy#", &view, &start, &end, &limit, &k, &first, &last, &unit,
                          &seps, &nseps)) {
        return NULL;
    }
    if (!span_arguments("mask_span_rows", k, first, last, unit, seps, nseps, is_sep)) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)view.buf;
    clamp_range(&start, &end, view.len);
    Py_ssize_t p = start;
    Py_ssize_t taken = 0;
    /* first pass: how far the rows this loop can mask go */
    while (end - p >= 11 && b[p] == 'D' && taken != limit) {
        int32_t blen = be32s(b + p + 1);
        if (blen < 10) {
            break;
        }
        Py_ssize_t e = p + 1 + (Py_ssize_t)blen;
        if (e > end) {
            break;
        }
        int16_t count = (int16_t)(((uint16_t)b[p + 5] << 8) | (uint16_t)b[p + 6]);
        if ((Py_ssize_t)count <= k) {
            break;
        }
        Py_ssize_t pos = pg_column(b, p, e, k);
        if (pos < 0) {
            break;
        }
        int32_t length = be32s(b + pos);
        if (length >= 0 && (pos + 4 + (Py_ssize_t)length > e || !all_ascii(b + pos + 4, length))) {
            break;
        }
        taken++;
        p = e;
    }
    unsigned char *o;
    PyObject *out = copy_run(b, start, p, &o);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    /* second pass, over the copy: these rows are known to be well formed */
    Py_ssize_t q = 0, n = p - start;
    while (q < n) {
        Py_ssize_t e = q + 1 + (Py_ssize_t)be32s(o + q + 1);
        Py_ssize_t pos = pg_column(o, q, e, k);
        int32_t length = be32s(o + pos);
        if (length > 0) {
            mask_value(o + pos + 4, length, first, last, (unsigned char)unit, is_sep, nseps);
        }
        q = e;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("Nnn", out, p, taken);
}

/* ------------------------------------------------------------------ MySQL text rows */

/* Where column k's length-encoded value starts in the text row b[q:end] (its first one is at
 * q); -1 when the row ends before it or a length cannot be read. */
static Py_ssize_t
my_column(const unsigned char *b, Py_ssize_t q, Py_ssize_t end, Py_ssize_t k)
{
    for (Py_ssize_t i = 0; i < k; i++) {
        if (q >= end) {
            return -1;
        }
        unsigned char c = b[q];
        if (c < 0xFB) {
            q += 1 + c;
            continue;
        }
        if (c == 0xFB) { /* NULL */
            q += 1;
            continue;
        }
        int extra = c == 0xFC ? 2 : c == 0xFD ? 3 : c == 0xFE ? 8 : -1;
        if (extra < 0 || q + 1 + extra > end) {
            return -1;
        }
        uint64_t v = 0;
        for (int j = extra - 1; j >= 0; j--) {
            v = (v << 8) | b[q + 1 + j];
        }
        if (v > (uint64_t)(end - q)) {
            return -1;
        }
        q += 1 + extra + (Py_ssize_t)v;
    }
    return q < end ? q : -1;
}

/* mysql_mask_span_rows(buf, pos, n, seq, cap, k, first, last, unit, separators)
 *     -> (frames, pos, seq, rows)
 *
 * The MySQL counterpart of mask_span_rows: a run of single-packet text-protocol rows from
 * buf[pos] (packet headers included), column k masked as there (full or partial mask over an
 * ASCII value, `separators` kept), each packet renumbered from `seq` (dbward may have
 * removed or added packets before, so the client's sequence ids continue from dbward's).
 * Masks exactly as ResponseRewriter/ColumnMasker.text_rows (proxy/mysql_masking.py) does and
 * stops, without consuming it, at the first packet it leaves to that Python loop: one not all
 * in buf[:n], of 16 MiB - 1 bytes or more, starting with 0xFE or 0xFF, a row with fewer than
 * k + 1 values or a value past its row, a masked value of 251 bytes or more, and one that is
 * not ASCII. Stops after `cap` rows (negative: no cap). Returns the frames, the position after
 * the last row taken, the next sequence id and how many rows were taken. */
static PyObject *
mysql_mask_span_rows(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, n, seq, cap, k, first, last;
    int unit;
    const char *seps;
    Py_ssize_t nseps;
    unsigned char is_sep[256];
    if (!PyArg_ParseTuple(args, "y*nnnnnnniy#", &view, &pos, &n, &seq, &cap, &k, &first, &last, &unit,
                          &seps, &nseps)) {
        return NULL;
    }
    if (!span_arguments("mysql_mask_span_rows", k, first, last, unit, seps, nseps, is_sep)) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)view.buf;
    clamp_range(&pos, &n, view.len);
    const Py_ssize_t start = pos;
    Py_ssize_t rows = 0;
    /* first pass: how far the rows this loop can mask go */
    while (n - pos >= 5 && rows != cap) {
        Py_ssize_t length = (Py_ssize_t)b[pos] | ((Py_ssize_t)b[pos + 1] << 8) | ((Py_ssize_t)b[pos + 2] << 16);
        Py_ssize_t end = pos + 4 + length;
        if (end > n || length >= 0xFFFFFF) {
            break;
        }
        unsigned char lead = b[pos + 4];
        if (lead == 0xFE || lead == 0xFF) {
            break;
        }
        Py_ssize_t q = my_column(b, pos + 4, end, k);
        if (q < 0) {
            break;
        }
        unsigned char c = b[q];
        if (c > 0xFB) {
            break; /* a long value: the Python loop */
        }
        if (c < 0xFB && (q + 1 + c > end || !all_ascii(b + q + 1, c))) {
            break;
        }
        rows++;
        pos = end;
    }
    unsigned char *o;
    PyObject *out = copy_run(b, start, pos, &o);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    /* second pass, over the copy: these rows are known to be well formed */
    Py_ssize_t r = 0, total = pos - start;
    while (r < total) {
        Py_ssize_t length = (Py_ssize_t)o[r] | ((Py_ssize_t)o[r + 1] << 8) | ((Py_ssize_t)o[r + 2] << 16);
        Py_ssize_t end = r + 4 + length;
        o[r + 3] = (unsigned char)(seq & 0xFF);
        seq++;
        Py_ssize_t q = my_column(o, r + 4, end, k);
        Py_ssize_t c = o[q];
        if (c != 0xFB && c > 0) {
            mask_value(o + q + 1, c, first, last, (unsigned char)unit, is_sep, nseps);
        }
        r = end;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("Nnnn", out, pos, seq, rows);
}

static PyMethodDef methods[] = {
    {"data_rows", data_rows, METH_VARARGS,
     "data_rows(buf, pos, end, max_length) -> (pos, rows): skip the complete DataRow frames "
     "from pos."},
    {"mask_span_rows", mask_span_rows, METH_VARARGS,
     "mask_span_rows(buf, start, end, limit, k, first, last, unit, separators) -> (frames, pos, rows): "
     "mask one column of a run of DataRows with a span mask (see proxy/postgres_masking.py)."},
    {"mysql_mask_span_rows", mysql_mask_span_rows, METH_VARARGS,
     "mysql_mask_span_rows(buf, pos, n, seq, cap, k, first, last, unit, separators) -> "
     "(frames, pos, seq, rows): mask one column of a run of MySQL text rows with a span mask "
     "(see proxy/mysql_masking.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "The per-row loops of the relay in C: the PostgreSQL DataRow walk and the span-mask loops "
    "(see wire/postgres/framing.py, proxy/postgres_masking.py, proxy/mysql_masking.py).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
