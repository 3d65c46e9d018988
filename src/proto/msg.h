/* The wire protocol: frame header and one struct, encoder and decoder per message.
 * Pure: no I/O. Every decoder checks every length, count and enum before use and
 * returns STARLING_E_PROTOCOL (or _VERSION) on anything malformed. See docs/protocol.md. */
#ifndef STARLING_PROTO_MSG_H
#define STARLING_PROTO_MSG_H
#include <stddef.h>
#include <stdint.h>

#define STARLING_MAGIC 0x4c525453u /* "STRL" little-endian */
#define STARLING_FRAME_HDR 8
#define STARLING_NONCE_LEN 32
#define STARLING_MAC_LEN 32
#define STARLING_NAME_MAX 64   /* run and peer names, incl. NUL */
#define STARLING_ADDR_MAX 64   /* dotted quad host, incl. NUL */
#define STARLING_REASON_MAX 128
#define STARLING_MAX_PEERS 8192
#define STARLING_CTRL_MAX (1u << 20) /* largest control frame payload: a TOPO of 8192 */
#define STARLING_DATA_HDR 24    /* seq, desc, step, piece after the frame header */
#define STARLING_DATA_F_ZSTD 0x01 /* MSG_DATA flag: the payload is one zstd frame */
#define STARLING_SHM_RING_MIN (64u << 10) /* MSG_SHM_OFFER's ring size, a power of two */
#define STARLING_SHM_RING_MAX (256u << 20)
#define STARLING_LINK_BPS_MAX 1000000000000ull /* 1 TB/s: a faster link report is garbage */
#define STARLING_LINK_RTT_US_MAX 600000000u    /* 10 minutes */

/* What a side asks for: a HELLO's or CHALLENGE's `security` byte (v3), the config's
 * security mode. How a connection's suite follows from both: auth/seal.h. */
enum {
    STARLING_SEC_NONE = 0,   /* no encryption: both ends must say so */
    STARLING_SEC_AEAD = 1,   /* encrypted; AES-256-GCM when both CPUs have it, else ChaCha20 */
    STARLING_SEC_CHACHA = 2, /* encrypted with ChaCha20-Poly1305 whatever the CPUs have */
    STARLING_SEC_MAX = 2
};
/* The `caps` byte: what this side's CPU can do fast. */
#define STARLING_CAP_AESGCM 0x01

typedef enum starling__msg_type {
    MSG_HELLO = 1,     /* client -> server, first frame of every connection */
    MSG_CHALLENGE = 2, /* server -> client */
    MSG_AUTH = 3,      /* client -> server */
    MSG_REJECT = 4,    /* server -> client, then close */
    MSG_REGISTER = 5,  /* peer -> coordinator, after auth */
    MSG_WELCOME = 6,   /* coordinator -> peer */
    MSG_HEARTBEAT = 7, /* both ways, empty */
    MSG_TOPO_REQ = 8,  /* peer -> coordinator: I am at update_topology */
    MSG_TOPO = 9,      /* coordinator -> peer: the new epoch */
    MSG_FAIL = 10,     /* peer -> coordinator: a collective failed here */
    MSG_QUERY = 11,    /* coordinator -> peer: report your status in epoch E */
    MSG_STATUS = 12,   /* peer -> coordinator */
    MSG_DECIDE = 13,   /* coordinator -> peer: outcome of epoch E's open collectives */
    MSG_LEAVE = 14,    /* peer -> coordinator: orderly exit */
    MSG_DATA = 15,     /* peer -> peer: a piece of a collective */
    MSG_DONE = 16,     /* peer -> peer: commit barrier token */
    MSG_ABORT = 17,    /* peer -> peer: the collective is aborted (mismatch) */
    MSG_ACCEPT = 18,   /* server -> client: authenticated */
    MSG_LINKS = 19,    /* peer -> coordinator: its measured links (ring order) */
    MSG_WATCH = 20,    /* standby -> active coordinator: watching, and the last STATE heard */
    MSG_STATE = 21,    /* active -> standby coordinator: its epoch and the one it proposes */
    MSG_SHM_OFFER = 22, /* dialler -> acceptor of a ring link on one host (v6) */
    MSG_SHM_REPLY = 23, /* acceptor -> dialler: the segment is mapped, or not */
    MSG_TYPE_MAX = 23
} starling__msg_type;

typedef enum starling__role {
    ROLE_CONTROL = 1, /* a peer's connection to the coordinator */
    ROLE_DATA = 2,    /* a ring link stream between two peers */
    ROLE_PROBE = 3,   /* a link measurement between two peers (docs/protocol.md) */
    ROLE_DATA_REV = 4 /* a ring link stream opened by the right neighbour (v5: the left
                       * one accepts no inbound connections) */
} starling__role;

typedef struct starling__frame_hdr {
    uint8_t type;
    uint8_t flags;
    uint32_t len; /* payload bytes after the 8-byte header */
} starling__frame_hdr;

/* Header: u8 type, u8 flags, u16 zero, u32 len. Decode refuses unknown types, flags other
 * than STARLING_DATA_F_ZSTD on MSG_DATA (none elsewhere), nonzero reserved bits, and
 * len > max_len (or > STARLING_CTRL_MAX for non-data types). */
void starling__frame_hdr_encode(uint8_t out[STARLING_FRAME_HDR], uint8_t type, uint32_t len);
int starling__frame_hdr_decode(const uint8_t in[STARLING_FRAME_HDR], uint32_t max_data_len,
                               starling__frame_hdr *out);

typedef struct starling__msg_hello {
    uint32_t magic;
    uint16_t version;
    uint8_t role;
    uint8_t nonce[STARLING_NONCE_LEN];
    char run[STARLING_NAME_MAX];
    uint64_t peer_id;
    uint64_t epoch;   /* data role: the epoch this link belongs to */
    uint8_t stream;   /* data role: stream index < nstreams */
    uint8_t nstreams; /* data role: 1..16 */
    uint8_t security; /* v3: what the client asks for (STARLING_SEC_*, auth/seal.h) */
    uint8_t caps;     /* v3: what its CPU does fast (STARLING_CAP_*) */
    uint64_t host;    /* v6: its host tag (net/shm.h); 0: it shares no memory */
    uint64_t peer_host; /* not on the wire: the server's tag, after handshake_client */
} starling__msg_hello;

typedef struct starling__msg_challenge {
    uint8_t nonce[STARLING_NONCE_LEN];
    uint8_t mac[STARLING_MAC_LEN]; /* server's proof over the client's nonce */
    uint8_t security, caps;        /* v3: the server's, as in the hello */
    uint64_t host;                 /* v6: the server's host tag, as in the hello */
} starling__msg_challenge;

typedef struct starling__msg_auth {
    uint8_t mac[STARLING_MAC_LEN]; /* client's proof over the server's nonce */
} starling__msg_auth;

typedef struct starling__msg_reject {
    int32_t code; /* a starling_error */
    char reason[STARLING_REASON_MAX];
} starling__msg_reject;

typedef struct starling__msg_register {
    uint64_t peer_id;
    char name[STARLING_NAME_MAX];
    char host[STARLING_ADDR_MAX];
    uint16_t port;
    uint32_t min_peers;
    uint64_t epoch;     /* 0 for a newcomer; else the epoch it is a member of */
    uint32_t nmembers;  /* members of that epoch in ring order (re-registration) */
    uint64_t members[STARLING_MAX_PEERS];
} starling__msg_register;

typedef struct starling__msg_welcome {
    uint64_t coord_id;
    uint32_t timeout_ms;
} starling__msg_welcome;

typedef struct starling__member {
    uint64_t id;
    char host[STARLING_ADDR_MAX];
    uint16_t port;
} starling__member;

typedef struct starling__msg_topo {
    uint64_t epoch;
    uint32_t rank;
    uint32_t n;
    starling__member members[STARLING_MAX_PEERS];
    uint32_t probe_bytes; /* 0, or: measure your links with probes of this many bytes */
} starling__msg_topo;

/* One measured link, from the reporting member to member `id`. */
typedef struct starling__link_est {
    uint64_t id;
    uint64_t bytes_per_s; /* 0: the link could not be measured (unusable) */
    uint32_t rtt_us;
} starling__link_est;

typedef struct starling__msg_links {
    uint64_t epoch; /* the epoch in which the links were measured */
    uint32_t n;
    starling__link_est links[STARLING_MAX_PEERS];
} starling__msg_links;

/* What an active coordinator tells its standby (docs/protocol.md, "Coordinator
 * failover"): its current epoch and, when it is about to form another, that one. */
typedef struct starling__msg_state {
    uint64_t seq;   /* counts this connection's STATE frames, from 1 */
    uint64_t stamp; /* the sender's clock (ms) when sent, echoed back by WATCH */
    uint64_t epoch; /* current epoch (0: none) */
    uint32_t n;     /* its members, in ring order; 0 if and only if epoch is 0 */
    uint64_t ids[STARLING_MAX_PEERS];
    uint64_t next_epoch; /* proposed next epoch (0: none), above epoch */
    uint32_t nnext;      /* its members; 0 if and only if next_epoch is 0 */
    uint64_t next_ids[STARLING_MAX_PEERS];
} starling__msg_state;

/* MSG_TOPO_REQ, MSG_QUERY: epoch only. MSG_FAIL: epoch, seq, code. MSG_STATUS: epoch,
 * done_seq (highest op whose data phase finished), cur_seq. MSG_DECIDE: epoch,
 * commit_seq (ops up to it commit, later ones abort), code (why). MSG_WATCH: epoch = the
 * seq of the last STATE heard, a = its stamp. */
typedef struct starling__msg_epoch {
    uint64_t epoch;
    uint64_t a; /* seq / done_seq / commit_seq */
    uint64_t b; /* cur_seq */
    int32_t code;
} starling__msg_epoch;

/* MSG_SHM_OFFER: where the dialler's segment is (net/shm.h; size 0: none could be made).
 * MSG_SHM_REPLY: ok 1 if the acceptor mapped it and the link runs over it, else 0. */
typedef struct starling__msg_shm {
    uint32_t pid, fd;
    uint64_t size;
    uint8_t nonce[16];
    uint8_t ok;
} starling__msg_shm;

typedef struct starling__msg_data {
    uint64_t seq;  /* collective's number within the epoch, from 1 */
    uint64_t desc; /* hash of (kind, count, dtype, op, root, tag): equal on all members */
    uint32_t step; /* DATA: ring step; DONE: barrier count k; ABORT: unused */
    uint32_t piece;/* DATA: piece index within the step; ABORT: the starling_error */
} starling__msg_data;

/* Each encoder writes header + payload into out (cap bytes); returns bytes written or
 * STARLING_E_LIMIT if it does not fit. Each decoder takes the payload only. */
int starling__hello_encode(uint8_t *out, size_t cap, const starling__msg_hello *m);
int starling__hello_decode(const uint8_t *p, size_t len, starling__msg_hello *m);
int starling__challenge_encode(uint8_t *out, size_t cap, const starling__msg_challenge *m);
int starling__challenge_decode(const uint8_t *p, size_t len, starling__msg_challenge *m);
int starling__auth_encode(uint8_t *out, size_t cap, const starling__msg_auth *m);
int starling__auth_decode(const uint8_t *p, size_t len, starling__msg_auth *m);
int starling__reject_encode(uint8_t *out, size_t cap, const starling__msg_reject *m);
int starling__reject_decode(const uint8_t *p, size_t len, starling__msg_reject *m);
int starling__register_encode(uint8_t *out, size_t cap, const starling__msg_register *m);
int starling__register_decode(const uint8_t *p, size_t len, starling__msg_register *m);
int starling__welcome_encode(uint8_t *out, size_t cap, const starling__msg_welcome *m);
int starling__welcome_decode(const uint8_t *p, size_t len, starling__msg_welcome *m);
int starling__topo_encode(uint8_t *out, size_t cap, const starling__msg_topo *m);
int starling__topo_decode(const uint8_t *p, size_t len, starling__msg_topo *m);
int starling__links_encode(uint8_t *out, size_t cap, const starling__msg_links *m);
int starling__links_decode(const uint8_t *p, size_t len, starling__msg_links *m);
int starling__state_encode(uint8_t *out, size_t cap, const starling__msg_state *m);
int starling__state_decode(const uint8_t *p, size_t len, starling__msg_state *m);
int starling__shm_offer_encode(uint8_t *out, size_t cap, const starling__msg_shm *m);
int starling__shm_offer_decode(const uint8_t *p, size_t len, starling__msg_shm *m);
int starling__shm_reply_encode(uint8_t *out, size_t cap, const starling__msg_shm *m);
int starling__shm_reply_decode(const uint8_t *p, size_t len, starling__msg_shm *m);
/* For MSG_TOPO_REQ, MSG_FAIL, MSG_QUERY, MSG_STATUS, MSG_DECIDE, MSG_WATCH, MSG_HEARTBEAT,
 * MSG_LEAVE, MSG_ACCEPT (the last three carry no fields: encoded empty). */
int starling__epoch_encode(uint8_t *out, size_t cap, uint8_t type, const starling__msg_epoch *m);
int starling__epoch_decode(uint8_t type, const uint8_t *p, size_t len, starling__msg_epoch *m);
/* MSG_DATA header (the payload bytes follow, nbytes of them), MSG_DONE, MSG_ABORT. */
int starling__data_encode(uint8_t *out, size_t cap, uint8_t type, uint8_t flags,
                          const starling__msg_data *m, uint32_t nbytes);
/* Decodes the 24 fixed bytes that follow the frame header of a data-plane frame. */
int starling__data_decode(const uint8_t p[STARLING_DATA_HDR], starling__msg_data *m);
#endif
