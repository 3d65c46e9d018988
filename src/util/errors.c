#include "starling.h"

const char *starling_strerror(int code)
{
    switch (code) {
    case STARLING_OK: return "success";
    case STARLING_E_INVALID: return "invalid argument";
    case STARLING_E_NOMEM: return "out of memory";
    case STARLING_E_OS: return "operating-system error";
    case STARLING_E_TIMEOUT: return "timed out";
    case STARLING_E_PEER_LOST: return "a peer was lost";
    case STARLING_E_MISMATCH: return "peers disagree on the call";
    case STARLING_E_PROTOCOL: return "malformed frame";
    case STARLING_E_AUTH: return "authentication failed";
    case STARLING_E_VERSION: return "protocol version mismatch";
    case STARLING_E_STATE: return "handle in the wrong state";
    case STARLING_E_CLOSED: return "communicator closed";
    case STARLING_E_UNSUPPORTED: return "unsupported dtype or operation";
    case STARLING_E_CORRUPT: return "integrity check failed";
    case STARLING_E_LIMIT: return "limit exceeded";
    case STARLING_E_NOT_FOUND: return "not found";
    case STARLING_E_BUSY: return "too many requests in flight";
    default: return "unknown error";
    }
}

unsigned starling_version(void) { return STARLING_VERSION_NUMBER; }
const char *starling_version_string(void) { return STARLING_VERSION_STRING; }
