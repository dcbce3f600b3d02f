/* proxy.http1._fastresp: one whole response of the commonest shape, read in one pass (no callbacks).

`read_plain(data, pos, cap)` reads the response that starts at `data[pos]` when it is, byte for byte, of
this shape, and returns None for anything else, so that the caller hands the bytes to llhttp, which then
decides as it always did:

    HTTP/1.1 SP 3DIGIT SP reason CRLF          status 200-599 but 204 and 304 (they have no body)
    *( token ":" *(SP / HTAB) value CRLF )     value: visible ASCII, SP and HTAB inside, neither at its end
    CRLF
    body                                      exactly Content-Length bytes, all of them in `data`

with exactly one Content-Length (1-15 digits, at most `cap`), no Transfer-Encoding, Upgrade or
Proxy-Connection, and a Connection header, if any, of exactly "close" or "keep-alive" (any case). None
also when the bytes end before the response does. What it accepts, llhttp reads the same way
(tests/http1/test_fastresp.py holds it to llhttp's reading, byte by byte), so the shape is the only rule
here: a bare LF, obs-fold, obs-text, an empty value, a second Content-Length, HTTP/1.0, an interim
response... are all llhttp's to accept or refuse.

Returns (status, reason, headers, body, keep_alive, end): the headers as (name, value) pairs of bytes as
they were sent, the reason and the body copies, `end` the offset after the body. Used by the upstream
connections (proxy/http1/reader.py's READ_PLAIN); built with the mypyc modules (setup.py), and not used
by the pure-Python build.

`same_at(data, pos, expect)` says whether `data[pos:]` starts with the bytes `expect` (without the slice
`data[pos:pos + len(expect)]` a Python comparison would copy): a shadow copy's answer that is byte for
byte its primary's, itself one whole plain response (proxy/upstream/pipeconn.py), is known to end where
`expect` does without being read at all.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_HEADERS 100
#define MAX_LENGTH_DIGITS 15

static unsigned char is_tchar[256];  /* RFC 9110 token characters */
static unsigned char is_vchar[256];  /* visible ASCII, SP and HTAB: what a value may hold inside */
static unsigned char is_rchar[256];  /* the same, for a reason phrase */

static void
init_tables(void)
{
    const char *extra = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        is_tchar[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        is_vchar[c] = (c >= 0x21 && c <= 0x7e) || c == ' ' || c == '\t';
        is_rchar[c] = is_vchar[c];
    }
    for (const char *e = extra; *e; e++)
        is_tchar[(unsigned char)*e] = 1;
}

/* `s[0:n]` equals the lower-case `lower` ignoring ASCII case (other bytes compare as they are). */
static int
same_name(const unsigned char *s, const char *lower, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return 1;
}

/* One plain response, scanned: where its parts are in the caller's buffer (nothing allocated). */
struct span {
    const unsigned char *at;
    Py_ssize_t len;
};

struct plain {
    long status;
    struct span reason;
    int n_headers;
    struct span names[MAX_HEADERS];
    struct span values[MAX_HEADERS];
    struct span body;
    int keep_alive;
    Py_ssize_t end;  /* the offset after the body */
};

/* Scan the response at start[pos:size] (see the module's comment); 1 when it is plain, 0 when not. */
static int
scan_plain(const unsigned char *start, Py_ssize_t pos, Py_ssize_t size, Py_ssize_t cap, struct plain *out)
{
    const unsigned char *p = start + pos, *end = start + size;

    /* The status line. */
    if (end - p < 15 || memcmp(p, "HTTP/1.1 ", 9) != 0)
        return 0;
    p += 9;
    if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' || p[3] != ' ')
        return 0;
    long status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (status == 204 || status == 304)
        return 0;
    p += 4;
    const unsigned char *reason = p;
    while (p < end && is_rchar[*p])
        p++;
    out->reason.at = reason;
    out->reason.len = p - reason;
    if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
        return 0;
    p += 2;

    /* The header lines, up to the empty one. */
    long long length = -1;
    int keep_alive = 1, n = 0;
    for (;;) {
        if (end - p < 2)
            return 0;
        if (p[0] == '\r') {
            if (p[1] != '\n')
                return 0;
            p += 2;
            break;
        }
        const unsigned char *name = p;
        while (p < end && is_tchar[*p])
            p++;
        Py_ssize_t name_len = p - name;
        if (p == end || name_len == 0 || *p != ':')
            return 0;
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const unsigned char *value = p;
        while (p < end && is_vchar[*p])
            p++;
        Py_ssize_t value_len = p - value;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n' || value_len == 0)
            return 0;
        if (value[value_len - 1] == ' ' || value[value_len - 1] == '\t')
            return 0;
        p += 2;
        if (name_len == 14 && same_name(name, "content-length", 14)) {
            if (length >= 0 || value_len > MAX_LENGTH_DIGITS)
                return 0;
            length = 0;
            for (Py_ssize_t i = 0; i < value_len; i++) {
                if (value[i] < '0' || value[i] > '9')
                    return 0;
                length = length * 10 + (value[i] - '0');
            }
        } else if (name_len == 10 && same_name(name, "connection", 10)) {
            if (value_len == 5 && same_name(value, "close", 5))
                keep_alive = 0;
            else if (!(value_len == 10 && same_name(value, "keep-alive", 10)))
                return 0;
        } else if ((name_len == 17 && same_name(name, "transfer-encoding", 17))
                   || (name_len == 7 && same_name(name, "upgrade", 7))
                   || (name_len == 16 && same_name(name, "proxy-connection", 16))) {
            return 0;
        }
        if (n >= MAX_HEADERS)
            return 0;
        out->names[n].at = name;
        out->names[n].len = name_len;
        out->values[n].at = value;
        out->values[n].len = value_len;
        n++;
    }

    /* The body: all of it, and no more than the caller keeps. */
    if (length < 0 || length > cap || end - p < length)
        return 0;
    out->status = status;
    out->n_headers = n;
    out->body.at = p;
    out->body.len = (Py_ssize_t)length;
    out->keep_alive = keep_alive;
    out->end = (p + length) - start;
    return 1;
}

/* The (data, pos, cap) arguments both readers take; 0 and an exception when they are wrong. */
static int
parse_args(const char *name, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, Py_ssize_t *pos,
           Py_ssize_t *cap)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes exactly %zd arguments", name, want);
        return 0;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "%s: data must be bytes", name);
        return 0;
    }
    *pos = PyLong_AsSsize_t(args[1]);
    if (*pos == -1 && PyErr_Occurred())
        return 0;
    *cap = PyLong_AsSsize_t(args[2]);
    if (*cap == -1 && PyErr_Occurred())
        return 0;
    if (*pos < 0 || *pos > PyBytes_GET_SIZE(args[0])) {
        PyErr_Format(PyExc_ValueError, "%s: pos outside data", name);
        return 0;
    }
    return 1;
}

static PyObject *
read_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t pos, cap;
    if (!parse_args("read_plain(data, pos, cap)", args, nargs, 3, &pos, &cap))
        return NULL;
    PyObject *data = args[0];
    struct plain r;
    if (!scan_plain((const unsigned char *)PyBytes_AS_STRING(data), pos, PyBytes_GET_SIZE(data), cap, &r))
        Py_RETURN_NONE;
    PyObject *headers = PyList_New(r.n_headers);
    if (headers == NULL)
        return NULL;
    for (int i = 0; i < r.n_headers; i++) {
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL)
            goto fail;
        PyList_SET_ITEM(headers, i, pair);  /* the list owns it; a list's unset items are NULL */
        PyObject *item = PyBytes_FromStringAndSize((const char *)r.names[i].at, r.names[i].len);
        if (item == NULL)
            goto fail;
        PyTuple_SET_ITEM(pair, 0, item);
        item = PyBytes_FromStringAndSize((const char *)r.values[i].at, r.values[i].len);
        if (item == NULL)
            goto fail;
        PyTuple_SET_ITEM(pair, 1, item);
    }
    PyObject *result = PyTuple_New(6);
    if (result == NULL)
        goto fail;
    PyTuple_SET_ITEM(result, 2, headers);  /* the tuple owns it from here */
    PyObject *alive = r.keep_alive ? Py_True : Py_False;
    Py_INCREF(alive);
    PyTuple_SET_ITEM(result, 4, alive);
    PyObject *item = PyLong_FromLong(r.status);
    if (item == NULL)
        goto fail_result;
    PyTuple_SET_ITEM(result, 0, item);
    item = PyBytes_FromStringAndSize((const char *)r.reason.at, r.reason.len);
    if (item == NULL)
        goto fail_result;
    PyTuple_SET_ITEM(result, 1, item);
    item = PyBytes_FromStringAndSize((const char *)r.body.at, r.body.len);
    if (item == NULL)
        goto fail_result;
    PyTuple_SET_ITEM(result, 3, item);
    item = PyLong_FromSsize_t(r.end);
    if (item == NULL)
        goto fail_result;
    PyTuple_SET_ITEM(result, 5, item);
    return result;

fail_result:  /* a tuple's unset items are NULL, which its deallocation skips */
    Py_DECREF(result);
    return NULL;
fail:
    Py_DECREF(headers);
    return NULL;
}

/* Whether `name` (a header's name) is `lower` (lower-case bytes) ignoring ASCII case. */
static int
is_name(const unsigned char *name, Py_ssize_t len, PyObject *lower)
{
    return len == PyBytes_GET_SIZE(lower) && same_name(name, PyBytes_AS_STRING(lower), len);
}

/* Whether the pair list `primary` ((name, value) bytes tuples) and the scanned `r` carry, for each of
   `names` (lower-case bytes), the same values in the same order (proxy.shadow.bytecheck.same_headers);
   -1 with an exception when `primary` is not such a list. */
static int
same_compared(PyObject *primary, const struct plain *r, PyObject *names)
{
    Py_ssize_t n_primary = PyList_GET_SIZE(primary);
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(names); k++) {
        PyObject *lower = PyTuple_GET_ITEM(names, k);
        if (!PyBytes_Check(lower)) {
            PyErr_SetString(PyExc_TypeError, "same_plain: names must be bytes");
            return -1;
        }
        int i = 0;  /* r's next header to look at */
        for (Py_ssize_t j = 0; j < n_primary; j++) {
            PyObject *pair = PyList_GET_ITEM(primary, j);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(pair, 0))
                || !PyBytes_Check(PyTuple_GET_ITEM(pair, 1))) {
                PyErr_SetString(PyExc_TypeError, "same_plain: headers must be (bytes, bytes) pairs");
                return -1;
            }
            PyObject *name = PyTuple_GET_ITEM(pair, 0);
            if (!is_name((const unsigned char *)PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), lower))
                continue;
            while (i < r->n_headers && !is_name(r->names[i].at, r->names[i].len, lower))
                i++;
            if (i == r->n_headers)
                return 0;  /* the primary has more of this name */
            PyObject *value = PyTuple_GET_ITEM(pair, 1);
            if (r->values[i].len != PyBytes_GET_SIZE(value)
                || memcmp(r->values[i].at, PyBytes_AS_STRING(value), (size_t)r->values[i].len) != 0)
                return 0;
            i++;
        }
        for (; i < r->n_headers; i++) {
            if (is_name(r->names[i].at, r->names[i].len, lower))
                return 0;  /* this answer has more of this name */
        }
    }
    return 1;
}

/* same_plain(data, pos, cap, status, body, names, headers) */
static PyObject *
same_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t pos, cap;
    if (!parse_args("same_plain(data, pos, cap, status, body, names, headers)", args, nargs, 7, &pos, &cap))
        return NULL;
    PyObject *data = args[0], *body = args[4], *names = args[5], *headers = args[6];
    long status = PyLong_AsLong(args[3]);
    if (status == -1 && PyErr_Occurred())
        return NULL;
    if (!PyBytes_Check(body) || !PyTuple_Check(names) || !PyList_Check(headers)) {
        PyErr_SetString(PyExc_TypeError, "same_plain: body must be bytes, names a tuple, headers a list");
        return NULL;
    }
    struct plain r;
    if (!scan_plain((const unsigned char *)PyBytes_AS_STRING(data), pos, PyBytes_GET_SIZE(data), cap, &r))
        Py_RETURN_NONE;
    if (!r.keep_alive || r.status != status || r.body.len != PyBytes_GET_SIZE(body)
        || memcmp(r.body.at, PyBytes_AS_STRING(body), (size_t)r.body.len) != 0)
        return PyLong_FromLong(0);
    int same = same_compared(headers, &r, names);
    if (same < 0)
        return NULL;
    return PyLong_FromSsize_t(same ? r.end : 0);
}

static PyObject *
same_at(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "same_at(data, pos, expect) takes exactly 3 arguments");
        return NULL;
    }
    PyObject *data = args[0], *expect = args[2];
    if (!PyBytes_Check(data) || !PyBytes_Check(expect)) {
        PyErr_SetString(PyExc_TypeError, "same_at: data and expect must be bytes");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(data), n = PyBytes_GET_SIZE(expect);
    if (pos < 0 || pos > size) {
        PyErr_SetString(PyExc_ValueError, "same_at: pos outside data");
        return NULL;
    }
    if (n > size - pos || memcmp(PyBytes_AS_STRING(data) + pos, PyBytes_AS_STRING(expect), (size_t)n) != 0)
        Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"read_plain", (PyCFunction)(void (*)(void))read_plain, METH_FASTCALL,
     "read_plain(data, pos, cap): (status, reason, headers, body, keep_alive, end) of the plain response at "
     "data[pos], or None (see the module's source)."},
    {"same_plain", (PyCFunction)(void (*)(void))same_plain, METH_FASTCALL,
     "same_plain(data, pos, cap, status, body, names, headers): the offset after the plain response at "
     "data[pos] when it has keep-alive, this status and body and, for each of names, these headers' values; "
     "0 when it is plain but not so; None when it is not plain (see the module's source)."},
    {"same_at", (PyCFunction)(void (*)(void))same_at, METH_FASTCALL,
     "same_at(data, pos, expect): whether data[pos:] starts with expect, compared in place."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "proxy.http1._fastresp",
    "One whole response of the commonest shape, read without llhttp's callbacks.", -1, methods,
};

PyMODINIT_FUNC
PyInit__fastresp(void)
{
    init_tables();
    return PyModule_Create(&module);
}
