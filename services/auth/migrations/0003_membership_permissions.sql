-- Permissions granted to one membership beyond its role's, each in a module
-- the membership is granted (revoking the module grant removes them). Like
-- every input of the access context, a change bumps the access version of
-- the member and of whoever borrows from the membership.
create table membership_permissions (
    membership_id uuid not null,
    module        text not null,
    permission    text not null references permissions (key) on delete cascade,
    granted_at    timestamptz not null default now(),
    primary key (membership_id, permission),
    foreign key (membership_id, module)
        references module_grants (membership_id, module) on delete cascade
);

create function membership_permissions_changed() returns trigger
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
create trigger membership_permissions_bump
    after insert or update or delete on membership_permissions
    for each row execute function membership_permissions_changed();
