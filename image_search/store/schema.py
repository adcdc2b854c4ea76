"""Numbered migrations: index i brings the schema from version i to i + 1. Never edit one that
has shipped; append a new one."""

from __future__ import annotations

MIGRATIONS: list[str] = [
    """
    DEFINE TABLE IF NOT EXISTS meta SCHEMALESS;
    DEFINE TABLE IF NOT EXISTS status SCHEMALESS;
    DEFINE TABLE IF NOT EXISTS image SCHEMAFULL;
    DEFINE FIELD IF NOT EXISTS path ON image TYPE string;
    DEFINE FIELD IF NOT EXISTS path_bytes ON image TYPE option<bytes>;
    DEFINE FIELD IF NOT EXISTS root ON image TYPE string;
    DEFINE FIELD IF NOT EXISTS size ON image TYPE int;
    DEFINE FIELD IF NOT EXISTS mtime_ns ON image TYPE int;
    DEFINE FIELD IF NOT EXISTS hash ON image TYPE option<string>;
    DEFINE FIELD IF NOT EXISTS width ON image TYPE option<int>;
    DEFINE FIELD IF NOT EXISTS height ON image TYPE option<int>;
    DEFINE FIELD IF NOT EXISTS taken_at ON image TYPE option<datetime>;
    DEFINE FIELD IF NOT EXISTS format ON image TYPE option<string>;
    DEFINE FIELD IF NOT EXISTS embedding ON image TYPE option<bytes>;
    DEFINE FIELD IF NOT EXISTS model ON image TYPE option<string>;
    DEFINE FIELD IF NOT EXISTS indexed_at ON image TYPE datetime;
    DEFINE FIELD IF NOT EXISTS error ON image TYPE option<string>;
    DEFINE FIELD IF NOT EXISTS offline ON image TYPE bool DEFAULT false;
    DEFINE INDEX IF NOT EXISTS image_path ON image FIELDS path UNIQUE;
    DEFINE INDEX IF NOT EXISTS image_hash ON image FIELDS hash;
    DEFINE INDEX IF NOT EXISTS image_root ON image FIELDS root;
    """,
    # 2: perceptual fingerprints (near-duplicates) and saved searches (smart albums). Rows stored
    # before have no fingerprint: the next index run decodes them again, reusing their embedding.
    """
    DEFINE FIELD IF NOT EXISTS fingerprint ON image TYPE option<bytes>;
    DEFINE TABLE IF NOT EXISTS album SCHEMAFULL;
    DEFINE FIELD IF NOT EXISTS name ON album TYPE string;
    DEFINE FIELD IF NOT EXISTS text ON album TYPE string;
    DEFINE FIELD IF NOT EXISTS liked ON album TYPE array<string>;
    DEFINE FIELD IF NOT EXISTS rejected ON album TYPE array<string>;
    DEFINE FIELD IF NOT EXISTS weights ON album TYPE object FLEXIBLE;
    DEFINE FIELD IF NOT EXISTS filters ON album TYPE object FLEXIBLE;
    DEFINE FIELD IF NOT EXISTS min_score ON album TYPE float;
    DEFINE FIELD IF NOT EXISTS vector ON album TYPE bytes;
    DEFINE FIELD IF NOT EXISTS model ON album TYPE string;
    DEFINE FIELD IF NOT EXISTS seen ON album TYPE array<string>;
    DEFINE FIELD IF NOT EXISTS created_at ON album TYPE datetime;
    DEFINE FIELD IF NOT EXISTS updated_at ON album TYPE datetime;
    DEFINE FIELD IF NOT EXISTS visited_at ON album TYPE option<datetime>;
    DEFINE INDEX IF NOT EXISTS album_name ON album FIELDS name UNIQUE;
    """,
    # 3: status's counts kept by every write (image_search.store.images), counted once here.
    """
    UPSERT meta:counts SET
        total = (SELECT count() FROM image GROUP ALL)[0].count ?? 0,
        indexed = (
            SELECT count() FROM image WHERE embedding != NONE AND offline = false GROUP ALL
        )[0].count ?? 0,
        failed = (SELECT count() FROM image WHERE error != NONE GROUP ALL)[0].count ?? 0,
        offline = (SELECT count() FROM image WHERE offline = true GROUP ALL)[0].count ?? 0
    RETURN NONE;
    """,
    # 4: the counters on lanes (image_search.store.connection.LANES): write transactions in flight
    # side by side keep theirs apart. The path's UNIQUE index goes: the record id is the path's
    # key already, and two names that are not UTF-8 and differ only in their undecodable bytes
    # share one text (U+FFFD), so the second's whole batch failed on it.
    """
    DEFINE TABLE IF NOT EXISTS lane SCHEMALESS;
    UPSERT lane:0 SET
        seq = meta:changes.seq ?? 0,
        total = meta:counts.total ?? 0,
        indexed = meta:counts.indexed ?? 0,
        failed = meta:counts.failed ?? 0,
        offline = meta:counts.offline ?? 0
    RETURN NONE;
    DELETE meta:changes, meta:counts RETURN NONE;
    REMOVE INDEX IF EXISTS image_path ON image;
    """,
    # 5: the device and inode of the file as it was read, so the web app serves only that very file
    # (a link swapped in later, or a decoy indexed then re-pointed, is refused). Rows stored before
    # have none until their file is indexed again; see image_search.pictures.opening.
    """
    DEFINE FIELD IF NOT EXISTS dev ON image TYPE option<int>;
    DEFINE FIELD IF NOT EXISTS ino ON image TYPE option<int>;
    """,
    # 6: the refine page's searches in progress (their rounds) and the pictures searched with
    # (image_search.store.rounds), so that a round has a URL that a reload or a second tab opens.
    """
    DEFINE TABLE IF NOT EXISTS rounds SCHEMAFULL;
    DEFINE FIELD IF NOT EXISTS rounds ON rounds TYPE array<object> FLEXIBLE;
    DEFINE FIELD IF NOT EXISTS updated_at ON rounds TYPE datetime;
    DEFINE INDEX IF NOT EXISTS rounds_updated ON rounds FIELDS updated_at;
    DEFINE TABLE IF NOT EXISTS picture SCHEMAFULL;
    DEFINE FIELD IF NOT EXISTS vector ON picture TYPE bytes;
    DEFINE FIELD IF NOT EXISTS preview ON picture TYPE bytes;
    DEFINE FIELD IF NOT EXISTS model ON picture TYPE string;
    DEFINE FIELD IF NOT EXISTS used_at ON picture TYPE datetime;
    DEFINE INDEX IF NOT EXISTS picture_used ON picture FIELDS used_at;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
