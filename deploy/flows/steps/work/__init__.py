"""What the steps do when they run, one module per kind of step, loaded only then.

A step factory in deploy/flows/steps/ builds what a plan shows (name, what it does and
undoes, what it would touch) and names its run, undo and finish here as
`later("deploy.flows.steps.work.<kind>:<function>", ...)` (deploy/deferred.py): a dry
run imports none of these modules, nor the primitives only they need (tests/test_plan_imports.py);
the one exception is `image.shows`, the commands an image environment's dry run prints, loaded
by that plan alone. A run function takes the step's context first, then what its factory passes.

    golive      the go-live checklist (production)
    gates       the evidence gate
    preflight   every check before anything changes
    build       the artifact built or reused, old builds pruned
    image       the image built and pushed once per build key, and its dry-run commands
    smoke       the watch window after a release
"""
