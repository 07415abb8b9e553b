-- Disabling (or re-enabling) a user changes what the user may access and
-- what the user's memberships lend through delegations: bump the access
-- version of the user and of every holder of a live delegation from one of
-- the user's memberships, so every cached access context built before the
-- change becomes unreachable at once.
create function users_status_changed() returns trigger
language plpgsql as $$
begin
    update users set access_version = access_version + 1 where id = new.id;
    perform bump_membership(m.id) from memberships m where m.user_id = new.id;
    return null;
end;
$$;
create trigger users_status_bump after update of status on users
    for each row when (old.status is distinct from new.status)
    execute function users_status_changed();
