/* Names and sizes of the public dtype and op enums. The names are the ones the CLI and
 * the Python bindings accept, so they are part of the interface: never rename one. */
#include "starling.h"

#include <string.h>

static const char *const dtype_names[STARLING_DTYPE_COUNT] = {
    [STARLING_F32] = "f32", [STARLING_F64] = "f64", [STARLING_F16] = "f16",
    [STARLING_BF16] = "bf16", [STARLING_I32] = "i32", [STARLING_I64] = "i64",
    [STARLING_U8] = "u8",
};

static const size_t dtype_sizes[STARLING_DTYPE_COUNT] = {
    [STARLING_F32] = 4, [STARLING_F64] = 8, [STARLING_F16] = 2, [STARLING_BF16] = 2,
    [STARLING_I32] = 4, [STARLING_I64] = 8, [STARLING_U8] = 1,
};

static const char *const op_names[STARLING_OP_COUNT] = {
    [STARLING_SUM] = "sum", [STARLING_AVG] = "avg", [STARLING_MIN] = "min",
    [STARLING_MAX] = "max",
};

/* Enums may arrive holding any int (from the wire, from Python); the unsigned cast makes
 * negative values fail the same bound check as too-large ones. */
static int dtype_valid(starling_dtype dtype)
{
    return (unsigned)dtype < (unsigned)STARLING_DTYPE_COUNT;
}

static int find_name(const char *const *names, int count, const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < count; i++) {
        if (strcmp(names[i], name) == 0)
            return i;
    }
    return -1;
}

size_t starling_dtype_size(starling_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_sizes[dtype] : 0;
}

const char *starling_dtype_name(starling_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_names[dtype] : NULL;
}

int starling_dtype_from_name(const char *name)
{
    return find_name(dtype_names, STARLING_DTYPE_COUNT, name);
}

const char *starling_op_name(starling_op op)
{
    return (unsigned)op < (unsigned)STARLING_OP_COUNT ? op_names[op] : NULL;
}

int starling_op_from_name(const char *name)
{
    return find_name(op_names, STARLING_OP_COUNT, name);
}
