//! Values by device, keyed by its tenant and id together: a lookup hashes the two names
//! once and probes once, where a map of tenants holding maps of devices did both twice.
//! The maps looked up for every message (registry, replay book, device states) are of
//! this kind (docs/PERFORMANCE.md, "Eighth pass"). A hashbrown table under the map, so
//! that a borrowed name finds a slot or inserts one in a single probe.

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// A device's tenant and id, owned: the key of a [`DeviceMap`]. Ordered by tenant, then
/// id. Shared strings, so a key made from a record's names is two reference counts, not
/// two allocations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceName {
    /// Tenant id.
    pub tenant: Arc<str>,
    /// Device id.
    pub device: Arc<str>,
}

/// A device's tenant and id, borrowed: looks a [`DeviceMap`] up without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceRef<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Device id.
    pub device: &'a str,
}

impl<'a> DeviceRef<'a> {
    /// `tenant`/`device`.
    pub fn new(tenant: &'a str, device: &'a str) -> Self {
        Self { tenant, device }
    }

    /// Owned.
    pub fn to_name(self) -> DeviceName {
        DeviceName {
            tenant: self.tenant.into(),
            device: self.device.into(),
        }
    }

    fn names(self, key: &DeviceName) -> bool {
        self.tenant == &*key.tenant && self.device == &*key.device
    }
}

/// The two names' bytes only: ahash mixes each write's length in, so the boundary
/// between them counts without the terminator `str` adds (two fewer rounds per lookup).
/// Equal names hash equal whatever the hasher; the map compares names in full.
fn hash_names<H: Hasher>(tenant: &str, device: &str, state: &mut H) {
    state.write(tenant.as_bytes());
    state.write(device.as_bytes());
}

impl Hash for DeviceRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_names(self.tenant, self.device, state);
    }
}

impl Hash for DeviceName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_names(&self.tenant, &self.device, state);
    }
}

impl DeviceName {
    /// Borrowed.
    pub fn as_ref(&self) -> DeviceRef<'_> {
        DeviceRef::new(&self.tenant, &self.device)
    }
}

/// The hasher of every [`DeviceMap`], seeded once per process: a frame's names are
/// hashed once ([`Hashed`]) for each map it is looked up in.
fn hasher() -> &'static ahash::RandomState {
    static HASHER: OnceLock<ahash::RandomState> = OnceLock::new();
    HASHER.get_or_init(ahash::RandomState::new)
}

/// The hash of a device's names in every [`DeviceMap`], kept with what a frame carries
/// on to the maps after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamesHash(u64);

/// A device's names with their hash: what a [`DeviceMap`] is looked up by. Made from a
/// [`DeviceRef`] (hashed then), or again from a hash taken before.
#[derive(Debug, Clone, Copy)]
pub struct Hashed<'a> {
    who: DeviceRef<'a>,
    hash: NamesHash,
}

impl<'a> Hashed<'a> {
    /// The names.
    pub fn who(self) -> DeviceRef<'a> {
        self.who
    }

    /// The hash, for later lookups of the same names.
    pub fn hash(self) -> NamesHash {
        self.hash
    }

    /// `who` with the hash [`Self::hash`] gave for the same names before.
    pub fn again(who: DeviceRef<'a>, hash: NamesHash) -> Self {
        debug_assert_eq!(hasher().hash_one(who), hash.0, "a hash of other names");
        Self { who, hash }
    }
}

impl<'a> From<DeviceRef<'a>> for Hashed<'a> {
    fn from(who: DeviceRef<'a>) -> Self {
        Self {
            who,
            hash: NamesHash(hasher().hash_one(who)),
        }
    }
}

/// Values by device.
#[derive(Clone)]
pub struct DeviceMap<V> {
    table: HashTable<(DeviceName, V)>,
}

impl<V> Default for DeviceMap<V> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
        }
    }
}

fn rehash<V>((k, _): &(DeviceName, V)) -> u64 {
    hasher().hash_one(k.as_ref())
}

impl<V> DeviceMap<V> {
    /// The value of `who`.
    pub fn get<'a>(&self, who: impl Into<Hashed<'a>>) -> Option<&V> {
        let Hashed { who, hash } = who.into();
        let found = self.table.find(hash.0, |(k, _)| who.names(k));
        found.map(|(_, v)| v)
    }

    /// The value of `who`, to change.
    pub fn get_mut<'a>(&mut self, who: impl Into<Hashed<'a>>) -> Option<&mut V> {
        let Hashed { who, hash } = who.into();
        let found = self.table.find_mut(hash.0, |(k, _)| who.names(k));
        found.map(|(_, v)| v)
    }

    /// The value of `who`, inserted first when missing (its key made by `name`, its
    /// value by `value`): one probe either way.
    pub fn get_or_insert_with<'a>(
        &mut self,
        who: impl Into<Hashed<'a>>,
        name: impl FnOnce() -> DeviceName,
        value: impl FnOnce() -> V,
    ) -> &mut V {
        let Hashed { who, hash } = who.into();
        let slot = match self.table.entry(hash.0, |(k, _)| who.names(k), rehash) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert((name(), value())).into_mut(),
        };
        &mut slot.1
    }

    /// Sets the value of `name`; returns the one it replaces.
    pub fn insert(&mut self, name: DeviceName, value: V) -> Option<V> {
        let Hashed { who, hash } = name.as_ref().into();
        match self.table.entry(hash.0, |(k, _)| who.names(k), rehash) {
            Entry::Occupied(mut e) => Some(std::mem::replace(&mut e.get_mut().1, value)),
            Entry::Vacant(e) => {
                e.insert((name, value));
                None
            }
        }
    }

    /// Removes `who`; returns its value.
    pub fn remove<'a>(&mut self, who: impl Into<Hashed<'a>>) -> Option<V> {
        let Hashed { who, hash } = who.into();
        let found = self.table.find_entry(hash.0, |(k, _)| who.names(k)).ok()?;
        Some(found.remove().0.1)
    }

    /// Keeps the devices for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&DeviceName, &mut V) -> bool) {
        self.table.retain(|(k, v)| keep(k, v));
    }

    /// Every device and value, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceName, &V)> {
        self.table.iter().map(|(k, v)| (k, v))
    }

    /// Every value, in no order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.table.iter().map(|(_, v)| v)
    }

    /// How many devices.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when it holds no device.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for DeviceMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Equal maps hold the same devices with equal values.
impl<V: PartialEq> PartialEq for DeviceMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k.as_ref()) == Some(v))
    }
}

impl<V> FromIterator<(DeviceName, V)> for DeviceMap<V> {
    fn from_iter<I: IntoIterator<Item = (DeviceName, V)>>(iter: I) -> Self {
        let mut map = Self::default();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [(&str, &str); 4] = [
        ("lyon", "aq-1"),
        ("lyon", "aq-12"),
        ("lyona", "q-12"),
        ("", "x"),
    ];

    #[test]
    fn a_borrowed_name_finds_what_its_owned_name_put() {
        let mut map: DeviceMap<String> = NAMES
            .iter()
            .map(|&(t, d)| (DeviceRef::new(t, d).to_name(), format!("{t}/{d}")))
            .collect();
        for (t, d) in NAMES {
            assert_eq!(map.get(DeviceRef::new(t, d)), Some(&format!("{t}/{d}")));
        }
        // The boundary between the names counts: "lyon"+"aq-1" is not "lyo"+"naq-1".
        assert_eq!(map.get(DeviceRef::new("lyo", "naq-1")), None);
        assert_eq!(map.get(DeviceRef::new("lyon", "aq-2")), None);
        assert_eq!(
            map.insert(DeviceRef::new("", "x").to_name(), "y".into()),
            Some("/x".into())
        );
        assert_eq!(
            map.remove(DeviceRef::new("lyon", "aq-1")),
            Some("lyon/aq-1".into())
        );
        map.retain(|k, _| &*k.tenant == "lyon");
        let left: Vec<_> = map.iter().map(|(k, v)| (k.as_ref(), v.as_str())).collect();
        assert_eq!(left, [(DeviceRef::new("lyon", "aq-12"), "lyon/aq-12")]);
    }

    #[test]
    fn a_map_grows_and_finds_every_device() {
        let mut map = DeviceMap::default();
        for i in 0..1000 {
            let (t, d) = (format!("t{}", i % 7), format!("d{i}"));
            *map.get_or_insert_with(
                DeviceRef::new(&t, &d),
                || DeviceRef::new(&t, &d).to_name(),
                || 0,
            ) += i;
        }
        assert_eq!(map.len(), 1000);
        for i in 0..1000 {
            let (t, d) = (format!("t{}", i % 7), format!("d{i}"));
            assert_eq!(map.get(DeviceRef::new(&t, &d)), Some(&i));
        }
    }
}
