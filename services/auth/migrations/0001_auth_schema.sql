-- auth_db: identity, sessions, memberships, roles and permissions, module
-- grants, delegation, version counters and the audit trail.
--
-- Timestamps are timestamptz; the service compares them in SQL (now()).
-- Access version counters only grow: a bump makes every access-context
-- cache key built from the old value unreachable.

create table users (
    id             uuid primary key,
    email          text not null unique check (email = lower(email) and length(email) <= 254),
    password_hash  text not null,
    status         text not null default 'active' check (status in ('active', 'disabled')),
    -- Bumped by logout-all: sessions created before it stop being valid.
    token_version  bigint not null default 1,
    -- Bumped whenever what this user may access changes.
    access_version bigint not null default 1,
    created_at     timestamptz not null default now()
);

-- Company ids are shared with Platform Core.
create table companies (
    id             uuid primary key,
    slug           text not null unique check (slug <> ''),
    name           text not null default '',
    status         text not null default 'active' check (status in ('active', 'suspended')),
    access_version bigint not null default 1,
    created_at     timestamptz not null default now()
);

create table platform_roles (
    user_id    uuid not null references users (id) on delete cascade,
    role       text not null check (role in ('platform-admin', 'support')),
    granted_at timestamptz not null default now(),
    primary key (user_id, role)
);

create table roles (
    key         text primary key,
    description text not null default ''
);

-- A permission key names its module: `finance.invoices.read` -> `finance`.
create table permissions (
    key         text primary key check (starts_with(key, module || '.')),
    module      text not null,
    description text not null default ''
);

create table role_permissions (
    role       text not null references roles (key) on delete cascade,
    permission text not null references permissions (key) on delete cascade,
    primary key (role, permission)
);

create table memberships (
    id         uuid primary key,
    user_id    uuid not null references users (id) on delete cascade,
    company_id uuid not null references companies (id) on delete cascade,
    role       text not null references roles (key),
    status     text not null default 'active' check (status in ('active', 'suspended')),
    created_at timestamptz not null default now(),
    unique (user_id, company_id)
);
create index memberships_company on memberships (company_id);

-- Which modules a membership may use (still subject to the company's
-- entitlements from Platform Core).
create table module_grants (
    membership_id uuid not null references memberships (id) on delete cascade,
    module        text not null,
    granted_at    timestamptz not null default now(),
    primary key (membership_id, module)
);

-- A membership lends its role's permissions of one module to another
-- membership of the same company until `expires_at`.
create table delegations (
    id            uuid primary key,
    from_membership uuid not null references memberships (id) on delete cascade,
    to_membership uuid not null references memberships (id) on delete cascade,
    module        text not null,
    expires_at    timestamptz not null,
    revoked_at    timestamptz,
    created_at    timestamptz not null default now(),
    check (from_membership <> to_membership)
);
create index delegations_to on delegations (to_membership, module);

-- One session per login. Refresh rotates the refresh token inside the
-- session; `family_id` names the lineage that a reused refresh token
-- revokes as a whole.
create table sessions (
    id             uuid primary key,
    user_id        uuid not null references users (id) on delete cascade,
    family_id      uuid not null,
    token_version  bigint not null,
    created_at     timestamptz not null default now(),
    revoked_at     timestamptz,
    revoked_reason text
);
create index sessions_user on sessions (user_id) where revoked_at is null;
create index sessions_family on sessions (family_id);

-- Only the SHA-256 of a refresh token is stored.
create table refresh_tokens (
    token_hash  bytea primary key check (length(token_hash) = 32),
    session_id  uuid not null references sessions (id) on delete cascade,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null,
    used_at     timestamptz,
    replaced_by bytea references refresh_tokens (token_hash)
);
create index refresh_tokens_session on refresh_tokens (session_id);

create table audit_events (
    id         bigserial primary key,
    at         timestamptz not null default now(),
    action     text not null,
    user_id    uuid,
    session_id uuid,
    company_id uuid,
    client_ip  text,
    detail     jsonb not null default '{}'::jsonb
);
create index audit_events_user on audit_events (user_id, at);

-- Whatever changes a membership, its grants or its delegations bumps the
-- access version of the users concerned (the member, and whoever holds a
-- live delegation from it), whoever writes the row.
create function bump_membership(member uuid) returns void
language sql as $$
    update users set access_version = access_version + 1
     where id in (
         select user_id from memberships where id = member
         union
         select m.user_id
           from delegations d
           join memberships m on m.id = d.to_membership
          where d.from_membership = member and d.revoked_at is null and d.expires_at > now()
     );
$$;

create function memberships_changed() returns trigger
language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        update users set access_version = access_version + 1 where id = old.user_id;
    end if;
    if tg_op = 'DELETE' then
        perform bump_membership(old.id);
        return old;
    end if;
    perform bump_membership(new.id);
    return new;
end;
$$;
create trigger memberships_bump after insert or update or delete on memberships
    for each row execute function memberships_changed();

create function grants_changed() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        perform bump_membership(old.membership_id);
        return old;
    end if;
    perform bump_membership(new.membership_id);
    return new;
end;
$$;
create trigger module_grants_bump after insert or update or delete on module_grants
    for each row execute function grants_changed();

create function delegations_changed() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        perform bump_membership(old.to_membership);
        return old;
    end if;
    perform bump_membership(new.to_membership);
    return new;
end;
$$;
create trigger delegations_bump after insert or update or delete on delegations
    for each row execute function delegations_changed();

-- A role's permissions change for every company that uses the role.
create function role_permissions_changed() returns trigger
language plpgsql as $$
declare
    changed text := case when tg_op = 'DELETE' then old.role else new.role end;
begin
    update companies set access_version = access_version + 1
     where id in (select company_id from memberships where role = changed);
    return null;
end;
$$;
create trigger role_permissions_bump after insert or update or delete on role_permissions
    for each row execute function role_permissions_changed();
