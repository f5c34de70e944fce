-- Every process caches the instances its API requests authenticate against; a change to an
-- instance, by any process or by hand, announces its id so that every cache forgets it
-- (see store/postgres/instance_cache.rs).
CREATE FUNCTION botlinkd_instance_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('botlinkd_instances', OLD.id::TEXT);
    RETURN NULL;
END;
$$;
CREATE TRIGGER instances_changed AFTER UPDATE OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION botlinkd_instance_changed();
