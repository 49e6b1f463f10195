"""Web releases on hosts over SSH (Fabric), Capistrano's layout with Kamal's lock.

On every host, under `deploy_to`:

    releases/<release-id>/   one unpacked artifact each, with a RELEASE file (the id)
    current -> releases/<id> switched atomically: `ln -s` to a temp name, then `mv -T`
                             (rename(2) replaces the link in one step; rm + ln would leave
                             a moment with no `current`; Capistrano's deploy:symlink:release)
    shared/                  files linked into every release (`.env`, ...)
    .deploy-lock/details     the remote lock: `mkdir` is the atomic step (Kamal's lock.rb)
    .deploy-fence            the token of the run whose changes the host takes (every change
                             checks it under flock: a killed run's command still running
                             there changes nothing once another run took the host)
    revisions.log            one line per release, rollback and undo (Capistrano)

`release()` runs in phases over all hosts in parallel (a thread per host, at most
`max_parallel`), with a barrier between them:

    1. connect, take the lock, read the host's state
    2. prepare: upload the tarball, verify its sha256, unpack into releases/<id>,
       link shared files, run `before_switch`
    3. switch `current`, run `restart` in it, check health
    4. finish: prune old releases, log, unlock

A failure in 1-2 on any host leaves every host on its old release (half-made release
dirs removed); a failure in 3 switches the hosts that switched back. Every host's
outcome is collected and reported once (`HostFailed`, like Fabric's GroupException).

Remote commands are built as strings of quoted argv in one module (`_commands`, quoted by
`sh`); the configured hook strings are the operator's own shell and are run as written.

    _values     Target, HostResult, HostState, LockInfo, ...: the values (pure)
    _targets    [hosts] settings and ssh_config -> targets; known hosts files (pure)
    _commands   every command sent to a host, and the parsers of what comes back (pure)
    _ssh        connections: strict host keys, ProxyJump, one bounded exec per command
    _group      the host group: per-host bookkeeping, parallel phases, results, HostFailed
    _lock       the hosts' deploy lock: for a whole run, status, breaking it
    _envfile    shared/.env written from the environment's variables (env.push), undone, checked
    _upload     SFTP uploads, bounded; delta uploads built from the host's base release
    _app        hooks, switch, start (supervisor or systemd), health, switching back
    _supervisor the script installed as bin/app: shared/.env by the dotenv dialect, acts on its own app only
    _release    release, undo_release, rollback: phases inside one skeleton (`_locked`)
    _containers the image target's host commands (podman or docker), as data, and their parsers
    _images     the image target's release, undo, rollback and reads: phases over the host group
    _proxy      the per-host reverse proxy ([proxy]: caddy or nginx) as commands: switch, live upstream, setup
    _slots      zero downtime on one host: the app on two ports, started beside the live one, the proxy switched
    _setup      hosts.setup: the proxy installed and started on every host, or removed
    _views      releases, current_release, check (read-only)
"""

import typing

if typing.TYPE_CHECKING:
    from deploy.hosts._app import hook_env, http_health
    from deploy.hosts._commands import (LOCK_DIR, LOCK_HELD_EXIT, CHECKSUM_EXIT, SHARED_MISSING_EXIT, DELTA_MISMATCH_EXIT,
                                        SWITCH_FAILED_EXIT, HOOK_FAILED_EXIT, HEALTH_PENDING_EXIT, FENCED_EXIT,
                                        FENCE_BUSY_EXIT, FENCE_FILE, FENCE_WAIT, fence_token, take_fence_command, fenced,
                                        sh, lock_details,
                                        parse_lock_details, state_command, parse_state, lock_command, unlock_command,
                                        unlock_ours_command,
                                        VERIFIED, MANIFEST_SECTION, remove_releases_command,
                                        read_lock_command, unpack_command, delta_upload_name, delta_unpack_command,
                                        switch_command, discard_delta_command, discard_release_command,
                                        free_space_command, previous_command, unlink_current_command, hook_command,
                                        prune_list, finish_command, go_live_command, health_check_command,
                                        log_tail_command, check_command, parse_check, SUPERVISOR, APP_STOPPED_EXIT,
                                        supervisor_path, install_supervisor_command, supervise_command, unit_name,
                                        unit_text, systemd_restart_command, stop_app_command, app_of_command,
                                        parse_app_of, same_app, start_facts_command, parse_start_facts,
                                        release_tree_command, parse_release_tree, hash_files_command)
    from deploy.hosts._lock import acquire_lock, release_lock, release_reachable_locks, lock_status, break_lock
    from deploy.hosts._envfile import (SHARED_ENV, env_push_command, env_restore_command, env_finish_command,
                                       env_present_command, push_env, restore_env, finish_env, missing_env)
    from deploy.hosts._release import release, undo_release, rollback, previous_of, judge_target, Judgement
    from deploy.hosts._ssh import MAX_JUMPS, RUN_IDLE_SECONDS, STDIN_LIMIT, quick_timeout
    from deploy.hosts._supervisor import DOTENV_AWK
    from deploy.hosts._targets import (targets, DEFAULT_USER, DEFAULT_PORT, USER_KNOWN_HOSTS, GLOBAL_KNOWN_HOSTS,
                                       resolve_login, known_hosts_files, KnownHostsText, parse_known_hosts, skipping)
    from deploy.hosts._upload import TreeEntry, artifact_tree, tree_lines, base_files, delta_plan
    from deploy.hosts._values import (RELEASE_ID, Target, HostResult, HostCheck, HostReleases, LockInfo, HostState,
                                      validate_release_id)
    from deploy.hosts._views import releases, current_release, check
    from deploy.hosts._setup import ProxyResult, setup_proxy, remove_proxy, proxy_unready
    from deploy.hosts._containers import (IMAGE_DIR, IMAGE_REF, RUNTIMES, ENV_UNCARRIED_EXIT, NO_FREE_PORT_EXIT,
                                          HEALTH_FAILED_EXIT, NO_RUNTIME_EXIT, Runtime, Record, ImageHostState, app_key,
                                          container_name, check_ref, registry_of, fill_args, detect_command, parse_detect,
                                          image_state_command, parse_image_state, auth_json, ca_command, pull_command,
                                          login_check_command, run_command, parse_port, health_command, record_command,
                                          set_current_command, stop_command, remove_images_command, prune_images,
                                          background_finish_command, wait_finish_command, FINISH_WAIT_LIMIT, PORT_VAR,
                                          run_then_health_command, stop_others_command)
    from deploy.hosts._images import (ImageProxy, Containers, ServedBefore, read_image_hosts, release_image,
                                      undo_image_release, rollback_image, check_image_hosts)
    # _proxy.switch_command (the proxy's switch) keeps its module's name: deploy.hosts.switch_command is `current`'s.
    from deploy.hosts._proxy import (UPSTREAM_ID, UPSTREAM_NAME, PROBE_HEADER, SEEN_HEADER, PROXY_SWITCH_FAILED_EXIT,
                                     upstream_command, caddy_config, nginx_config, proxy_setup_command,
                                     proxy_remove_command, proxy_status_command, parse_proxy_status, MIGRATE_REQ,
                                     migrate_req_check, migrate_req_probe)
    from deploy.hosts._slots import (slot_ports, slot_command, slots_state_command, parse_slots_state, start_slot_command,
                                     slot_health_command, stop_slot_command, converge)
else:   # each module imported when one of its names is first used (deploy/deferred.py, exports)
    from deploy import deferred

    __getattr__, __dir__ = deferred.exports(__name__, {
        "deploy.hosts._app": ("hook_env", "http_health"),
        "deploy.hosts._commands": ("LOCK_DIR", "LOCK_HELD_EXIT", "CHECKSUM_EXIT", "SHARED_MISSING_EXIT",
                                   "DELTA_MISMATCH_EXIT", "SWITCH_FAILED_EXIT", "HOOK_FAILED_EXIT",
                                   "HEALTH_PENDING_EXIT", "FENCED_EXIT", "FENCE_BUSY_EXIT", "FENCE_FILE",
                                   "FENCE_WAIT", "fence_token", "take_fence_command", "fenced", "sh", "lock_details",
                                   "parse_lock_details", "state_command", "parse_state", "lock_command",
                                   "unlock_command", "unlock_ours_command", "VERIFIED", "MANIFEST_SECTION",
                                   "remove_releases_command", "read_lock_command", "unpack_command",
                                   "delta_upload_name", "delta_unpack_command", "switch_command",
                                   "discard_delta_command", "discard_release_command", "free_space_command",
                                   "previous_command", "unlink_current_command", "hook_command", "prune_list",
                                   "finish_command", "go_live_command", "health_check_command", "log_tail_command",
                                   "check_command", "parse_check", "SUPERVISOR", "APP_STOPPED_EXIT",
                                   "supervisor_path", "install_supervisor_command", "supervise_command", "unit_name",
                                   "unit_text", "systemd_restart_command", "stop_app_command", "app_of_command",
                                   "parse_app_of", "same_app", "start_facts_command", "parse_start_facts",
                                   "release_tree_command", "parse_release_tree", "hash_files_command"),
        "deploy.hosts._lock": ("acquire_lock", "release_lock", "release_reachable_locks", "lock_status", "break_lock"),
        "deploy.hosts._envfile": ("SHARED_ENV", "env_push_command", "env_restore_command", "env_finish_command",
                                  "env_present_command", "push_env", "restore_env", "finish_env", "missing_env"),
        "deploy.hosts._release": ("release", "undo_release", "rollback", "previous_of", "judge_target", "Judgement"),
        "deploy.hosts._ssh": ("MAX_JUMPS", "RUN_IDLE_SECONDS", "STDIN_LIMIT", "quick_timeout"),
        "deploy.hosts._supervisor": ("DOTENV_AWK",),
        "deploy.hosts._targets": ("targets", "DEFAULT_USER", "DEFAULT_PORT", "USER_KNOWN_HOSTS",
                                  "GLOBAL_KNOWN_HOSTS", "resolve_login", "known_hosts_files", "KnownHostsText",
                                  "parse_known_hosts", "skipping"),
        "deploy.hosts._upload": ("TreeEntry", "artifact_tree", "tree_lines", "base_files", "delta_plan"),
        "deploy.hosts._values": ("RELEASE_ID", "Target", "HostResult", "HostCheck", "HostReleases", "LockInfo",
                                 "HostState", "validate_release_id"),
        "deploy.hosts._views": ("releases", "current_release", "check"),
        "deploy.hosts._setup": ("ProxyResult", "setup_proxy", "remove_proxy", "proxy_unready"),
        "deploy.hosts._containers": ("IMAGE_DIR", "IMAGE_REF", "RUNTIMES", "ENV_UNCARRIED_EXIT", "NO_FREE_PORT_EXIT",
                                     "HEALTH_FAILED_EXIT", "NO_RUNTIME_EXIT", "Runtime", "Record", "ImageHostState",
                                     "app_key", "container_name", "check_ref", "registry_of", "fill_args",
                                     "detect_command", "parse_detect", "image_state_command", "parse_image_state",
                                     "auth_json", "ca_command", "pull_command", "login_check_command", "run_command",
                                     "parse_port", "health_command", "record_command", "set_current_command",
                                     "stop_command", "remove_images_command", "prune_images",
                                     "background_finish_command", "wait_finish_command", "FINISH_WAIT_LIMIT",
                                     "PORT_VAR", "run_then_health_command", "stop_others_command"),
        "deploy.hosts._images": ("ImageProxy", "Containers", "ServedBefore", "read_image_hosts", "release_image",
                                 "undo_image_release", "rollback_image", "check_image_hosts"),
        "deploy.hosts._proxy": ("UPSTREAM_ID", "UPSTREAM_NAME", "PROBE_HEADER", "SEEN_HEADER",
                                "PROXY_SWITCH_FAILED_EXIT", "upstream_command", "caddy_config", "nginx_config",
                                "proxy_setup_command", "proxy_remove_command", "proxy_status_command",
                                "parse_proxy_status", "MIGRATE_REQ", "migrate_req_check", "migrate_req_probe"),
        "deploy.hosts._slots": ("slot_ports", "slot_command", "slots_state_command", "parse_slots_state",
                                "start_slot_command", "slot_health_command", "stop_slot_command", "converge"),
    })

__all__ = [
    "RELEASE_ID", "Target", "HostResult", "HostCheck", "HostReleases", "LockInfo", "HostState", "validate_release_id",
    "targets", "DEFAULT_USER", "DEFAULT_PORT", "USER_KNOWN_HOSTS", "GLOBAL_KNOWN_HOSTS", "resolve_login",
    "known_hosts_files", "KnownHostsText", "parse_known_hosts", "skipping",
    "LOCK_DIR", "LOCK_HELD_EXIT", "CHECKSUM_EXIT", "SHARED_MISSING_EXIT", "DELTA_MISMATCH_EXIT", "SWITCH_FAILED_EXIT",
    "HOOK_FAILED_EXIT", "HEALTH_PENDING_EXIT", "FENCED_EXIT", "FENCE_BUSY_EXIT", "FENCE_FILE", "FENCE_WAIT",
    "fence_token", "take_fence_command", "fenced", "sh", "lock_details", "parse_lock_details", "state_command",
    "parse_state", "lock_command", "unlock_command", "unlock_ours_command", "VERIFIED", "MANIFEST_SECTION", "remove_releases_command", "read_lock_command", "unpack_command", "delta_upload_name",
    "delta_unpack_command", "switch_command", "discard_delta_command", "discard_release_command",
    "free_space_command", "previous_command", "unlink_current_command", "hook_command", "prune_list",
    "finish_command", "go_live_command", "health_check_command", "log_tail_command", "check_command", "parse_check",
    "SUPERVISOR", "DOTENV_AWK", "APP_STOPPED_EXIT", "supervisor_path", "install_supervisor_command", "supervise_command",
    "unit_name", "unit_text", "systemd_restart_command", "stop_app_command", "app_of_command", "parse_app_of",
    "same_app", "start_facts_command", "parse_start_facts", "release_tree_command", "parse_release_tree",
    "hash_files_command",
    "MAX_JUMPS", "RUN_IDLE_SECONDS", "STDIN_LIMIT", "quick_timeout",
    "acquire_lock", "release_lock", "release_reachable_locks", "lock_status", "break_lock",
    "SHARED_ENV", "env_push_command", "env_restore_command", "env_finish_command", "env_present_command",
    "push_env", "restore_env", "finish_env", "missing_env",
    "TreeEntry", "artifact_tree", "tree_lines", "base_files", "delta_plan",
    "hook_env", "http_health",
    "release", "undo_release", "rollback", "previous_of", "judge_target", "Judgement",
    "releases", "current_release", "check",
    "ProxyResult", "setup_proxy", "remove_proxy", "proxy_unready",
    "UPSTREAM_ID", "UPSTREAM_NAME", "PROBE_HEADER", "SEEN_HEADER", "PROXY_SWITCH_FAILED_EXIT", "upstream_command",
    "caddy_config", "nginx_config", "proxy_setup_command", "proxy_remove_command", "proxy_status_command",
    "parse_proxy_status", "MIGRATE_REQ", "migrate_req_check", "migrate_req_probe",
    "slot_ports", "slot_command", "slots_state_command", "parse_slots_state", "start_slot_command",
    "slot_health_command", "stop_slot_command", "converge",
    "IMAGE_DIR", "IMAGE_REF", "RUNTIMES", "ENV_UNCARRIED_EXIT", "NO_FREE_PORT_EXIT", "HEALTH_FAILED_EXIT",
    "NO_RUNTIME_EXIT", "Runtime", "Record", "ImageHostState", "app_key", "container_name", "check_ref", "registry_of",
    "fill_args", "detect_command", "parse_detect", "image_state_command", "parse_image_state", "auth_json",
    "ca_command", "pull_command", "login_check_command", "run_command", "parse_port", "health_command",
    "record_command", "set_current_command", "stop_command", "remove_images_command", "prune_images",
    "background_finish_command", "wait_finish_command", "FINISH_WAIT_LIMIT", "PORT_VAR", "run_then_health_command",
    "stop_others_command",
    "ImageProxy", "Containers", "ServedBefore", "read_image_hosts", "release_image", "undo_image_release",
    "rollback_image", "check_image_hosts",
]
