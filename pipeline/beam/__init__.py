"""The Beam shell the jobs share: running a pipeline on any runner (`runner`;
the local runner's workers forked by `forkserver`),
the guarded steps and their counters (`steps`), Documents packed between stages
(`packed`), output parts sized by bytes (`parts`) and the external sort their
writers use (`extsort`)."""
