//! What the training loop tells an observer (the Monitor implements this
//! trait one layer up, so training never imports monitoring).

/// One row update seen by an observer.
pub struct RowUpdate<'a> {
    pub id: u64,
    pub row: u32,
    /// Interaction count of the row after this event.
    pub interactions: u64,
    pub first_seen: i64,
    pub timestamp: i64,
    pub before: &'a [f32],
    pub after: &'a [f32],
}

/// Receives updates of the observed rows from the training loop: each
/// worker fills a shard of its own without locks, absorbed once at the end
/// of its share.
pub trait UpdateObserver: Sync {
    type Shard: Send;
    /// `false` when `observe` does nothing: the loops then skip building
    /// its argument (a metadata load per event) at compile time.
    const OBSERVES: bool = true;
    fn new_shard(&self) -> Self::Shard;
    fn observe(&self, shard: &mut Self::Shard, update: &RowUpdate<'_>);
    fn absorb(&self, shard: Self::Shard);
}

/// The observer that observes nothing (compiled away).
pub struct NoObserver;

impl UpdateObserver for NoObserver {
    type Shard = ();
    const OBSERVES: bool = false;
    fn new_shard(&self) {}
    #[inline(always)]
    fn observe(&self, _: &mut (), _: &RowUpdate<'_>) {}
    fn absorb(&self, _: ()) {}
}
