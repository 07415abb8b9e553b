-- Password-reset tokens: only the SHA-256 of a token is stored; each is
-- single-use and expires.
create table password_resets (
    token_hash bytea primary key check (length(token_hash) = 32),
    user_id    uuid not null references users (id) on delete cascade,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    used_at    timestamptz
);
create index password_resets_user on password_resets (user_id) where used_at is null;
