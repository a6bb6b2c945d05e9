//! The restricted pickle machine: walks every opcode of one pickle, records every import with its
//! position, and builds just enough of the value graph (dicts, lists, tuples, strings, ints, persistent
//! storages, `_rebuild_tensor*` results) to list tensors. Nothing is imported or called.
//!
//! Values live in an arena (ids, no recursion, no reference cycles to leak). Every import remembers how
//! the pickle uses it (called by REDUCE / NEWOBJ / INST / OBJ, built on by BUILD, passed to a call).
//! Past the memory limits, and after any opcode it cannot decode, the machine stops tracking values and
//! keeps scanning opcodes for imports ("lexical" mode): there an operand it can no longer resolve, and
//! the use of every import, count as dangerous, and memo slots are numbered exactly as CPython numbers
//! them but resolve only when lexical mode filled them itself.

use super::opcodes::{decode, extent, resync_point, DecodeError, Extent, Op};
use crate::dtype::Dtype;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

/// Index of a value in the arena.
pub type Id = u32;

/// Bounds that keep a hostile pickle from exhausting memory.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_objects: usize,
    pub max_stack: usize,
    pub max_entries: usize,
    /// Bytes of decoded (escaped protocol 0) strings.
    pub max_text: usize,
    /// Imports recorded before only dangerous ones are kept.
    pub max_imports: usize,
    /// Keep scanning lexically after an opcode that cannot be decoded (off only to sniff formats).
    pub resync: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_objects: 1_000_000,
            max_stack: 1_000_000,
            max_entries: 4_000_000,
            max_text: 64 << 20,
            max_imports: 100_000,
            resync: true,
        }
    }
}

/// A storage named by a persistent id `('storage', torch.XStorage, key, location, numel[, view])`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    /// Element type (`None` for storage classes fastscan has no dtype for, such as complex128).
    pub dtype: Option<Dtype>,
    pub class: String,
    pub key: String,
    pub numel: u64,
    /// Legacy view metadata: offset into the root storage, in elements.
    pub view_offset: u64,
}

/// A tensor built by `torch._utils._rebuild_tensor*`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    /// Element type when the rebuild call names it (v3); otherwise the storage's.
    pub dtype: Option<Dtype>,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// A pickled numpy array: `_reconstruct(ndarray, (0,), b'b')` then BUILD with
/// `(version, shape, dtype, is_fortran, raw_bytes)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArrayRef {
    /// numpy type string with byte order (`<f4`), when the dtype was a plain `numpy.dtype`.
    pub descr: Option<String>,
    pub shape: Vec<u64>,
    pub fortran: bool,
    /// Where the raw elements start in the pickle buffer and how many bytes there are (None when the
    /// pickle encodes them, as protocol 2's `_codecs.encode` does).
    pub data: Option<(usize, u64)>,
}

/// A value the machine tracks.
#[derive(Clone, Debug)]
pub enum Obj<'a> {
    None,
    Bool(bool),
    Int(i64),
    BigInt,
    Float(f64),
    Str(Cow<'a, str>),
    /// A bytes value: its length and, when its bytes lie verbatim in the buffer, where they start.
    Bytes(u64, Option<usize>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set,
    /// The import with this index.
    Global(usize),
    /// Something a call would have produced (never produced here).
    Instance,
    Storage(Box<StorageRef>),
    Tensor(Box<TensorRef>),
    /// A numpy array built by `numpy.core.multiarray._reconstruct` and filled by BUILD.
    Array(Box<ArrayRef>),
    /// A `numpy.dtype(...)`: its type string (`f4`), prefixed with the byte order BUILD sets (`<f4`).
    NpDtype(String),
    /// A persistent id that is a plain string or int (the legacy tar format's tensor keys).
    PersKey(String),
    /// A persistent id that is no storage, a buffer, or anything else opaque.
    Opaque,
}

/// One import a pickle makes.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Import {
    pub module: String,
    pub name: String,
    /// Offset of the opcode in the data buffer.
    pub pos: usize,
    /// Which opcode made it (GLOBAL, INST, STACK_GLOBAL, EXT).
    pub opcode: &'static str,
    /// `Some(reason)` when the operands could not be resolved to two strings.
    pub unresolved: Option<String>,
    /// How the pickle uses the imported object (`REDUCE`, `BUILD`, `argument`, ...): the first use seen,
    /// `UNTRACKED` when values were no longer followed, `None` when it is never used.
    pub used: Option<&'static str>,
    /// `module name` as written in the pickle, when CPython's `_compat_pickle` renames it.
    pub written: Option<String>,
}

/// The use of an import met while values were not followed (lexical mode): it may be called.
pub const UNTRACKED: &str = "not tracked (the pickle was read lexically from here)";

impl Import {
    fn new(module: String, name: String, pos: usize, opcode: &'static str) -> Import {
        Import {
            module,
            name,
            pos,
            opcode,
            unresolved: None,
            used: None,
            written: None,
        }
    }

    /// An import whose target cannot be named: always treated as dangerous.
    fn unresolved(
        module: String,
        name: String,
        pos: usize,
        opcode: &'static str,
        why: &str,
    ) -> Import {
        Import {
            unresolved: Some(why.into()),
            ..Import::new(module, name, pos, opcode)
        }
    }

    /// A GLOBAL / INST / STACK_GLOBAL target as CPython resolves it under pickle protocol `proto`.
    fn resolved(module: &str, name: &str, pos: usize, opcode: &'static str, proto: u8) -> Import {
        let (m, n) = super::imports::resolve(module, name, proto);
        let written = (m != module || n != name).then(|| format!("{module} {name}"));
        Import {
            written,
            ..Import::new(m, n, pos, opcode)
        }
    }
}

/// What running one pickle gave.
pub struct Run<'a> {
    pub objs: Vec<Obj<'a>>,
    /// The value STOP returned, if the pickle ran to its end with values tracked.
    pub root: Option<Id>,
    pub imports: Vec<Import>,
    /// Offset after the last opcode read (after STOP for a complete pickle).
    pub end: usize,
    /// True when STOP was reached.
    pub complete: bool,
    /// Where and why reading went wrong (the first problem).
    pub error: Option<(usize, String)>,
    /// The memory limit that stopped value tracking (imports were still all read).
    pub limited: Option<String>,
    /// Number of opcodes read.
    pub ops: usize,
    /// Offset of the opcode reading stopped at (the one cut off, for a truncated pickle; else `end`).
    pub stopped_at: usize,
    /// True when the first problem is that the bytes end inside an opcode or its operand.
    pub truncated: bool,
    /// Pickle protocol in force at the end (the last PROTO opcode's).
    pub proto: u8,
}

impl<'a> Run<'a> {
    /// The value with this id.
    pub fn get(&self, id: Id) -> &Obj<'a> {
        &self.objs[id as usize]
    }
}

struct Machine<'a> {
    objs: Vec<Obj<'a>>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: Memo,
    /// Shared ids of immutable values (None, bools, small ints, the empty tuple), made on first use.
    interned: Vec<Id>,
    imports: Vec<Import>,
    entries: usize,
    text: usize,
    limits: Limits,
    /// Protocol announced by the last PROTO opcode (CPython starts at 0).
    proto: u8,
}

/// Why the machine stopped at an opcode.
#[derive(Debug)]
enum StepError {
    /// A memory limit was reached (the pickle may be fine: listing stops, imports are still checked).
    Limit(String),
    /// The pickle is malformed at this opcode.
    Invalid(String),
}

impl From<&str> for StepError {
    fn from(why: &str) -> Self {
        StepError::Invalid(why.to_string())
    }
}

impl From<String> for StepError {
    fn from(why: String) -> Self {
        StepError::Invalid(why)
    }
}

type Step = Result<(), StepError>;

fn over_limit(why: impl std::fmt::Display) -> StepError {
    StepError::Limit(why.to_string())
}

/// The memo: a vector for the dense indices picklers write, a map for anything else.
#[derive(Default)]
struct Memo {
    dense: Vec<Id>,
    sparse: HashMap<u64, Id>,
    /// Distinct keys set (what MEMOIZE numbers the next entry with).
    len: usize,
}

const UNSET: Id = Id::MAX;
/// Slots of interned immutable values: None, False, True, (), then ints 0..SMALL_INTS.
const SMALL_INTS: i64 = 4096;

impl Memo {
    fn get(&self, i: u64) -> Option<Id> {
        match self.dense.get(i as usize) {
            Some(&id) if id != UNSET => Some(id),
            Some(_) => None,
            None => self.sparse.get(&i).copied(),
        }
    }

    fn put(&mut self, i: u64, id: Id, limit: usize) -> Step {
        if (i as usize) < self.dense.len() {
            if self.dense[i as usize] == UNSET {
                self.len += 1;
            }
            self.dense[i as usize] = id;
            return Ok(());
        }
        let fresh = !self.sparse.contains_key(&i);
        if fresh && self.len >= limit {
            return Err(over_limit("memo too large"));
        }
        // Grow the vector only while it stays at least half full (sparse indices go to the map).
        if i <= self.dense.len() as u64 + 1024
            && i < 2 * self.len as u64 + 1024
            && self.sparse.is_empty()
        {
            self.dense.resize(i as usize + 1, UNSET);
            self.dense[i as usize] = id;
        } else {
            self.sparse.insert(i, id);
        }
        if fresh {
            self.len += 1;
        }
        Ok(())
    }
}

impl<'a> Machine<'a> {
    fn alloc(&mut self, o: Obj<'a>) -> Result<Id, StepError> {
        if self.objs.len() >= self.limits.max_objects {
            return Err(over_limit(format!(
                "more than {} values",
                self.limits.max_objects
            )));
        }
        self.objs.push(o);
        Ok((self.objs.len() - 1) as Id)
    }

    fn push(&mut self, o: Obj<'a>) -> Step {
        let slot = match &o {
            Obj::None => Some(0),
            Obj::Bool(b) => Some(1 + *b as usize),
            Obj::Tuple(v) if v.is_empty() => Some(3),
            Obj::Int(v) if (0..SMALL_INTS).contains(v) => Some(4 + *v as usize),
            _ => None,
        };
        let id = match slot {
            Some(k) => {
                if self.interned.is_empty() {
                    self.interned = vec![UNSET; 4 + SMALL_INTS as usize];
                }
                if self.interned[k] == UNSET {
                    self.interned[k] = self.alloc(o)?;
                }
                self.interned[k]
            }
            None => self.alloc(o)?,
        };
        self.push_id(id)
    }

    fn push_id(&mut self, id: Id) -> Step {
        if self.stack.len() >= self.limits.max_stack {
            return Err(over_limit(format!(
                "stack deeper than {}",
                self.limits.max_stack
            )));
        }
        self.stack.push(id);
        Ok(())
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Id, StepError> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        Ok(self.stack.pop().unwrap())
    }

    fn top(&self) -> Result<Id, StepError> {
        if self.stack.len() <= self.floor() {
            return Err("stack underflow".into());
        }
        Ok(*self.stack.last().unwrap())
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>, StepError> {
        let m = self.marks.pop().ok_or("no MARK on the stack")?;
        Ok(self.stack.split_off(m))
    }

    fn grow(&mut self, n: usize) -> Step {
        self.entries += n;
        if self.entries > self.limits.max_entries {
            return Err(over_limit(format!(
                "more than {} container entries",
                self.limits.max_entries
            )));
        }
        Ok(())
    }

    fn str_of(&self, id: Id) -> Option<&str> {
        match &self.objs[id as usize] {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    fn int_of(&self, id: Id) -> Option<i64> {
        match self.objs[id as usize] {
            Obj::Int(v) => Some(v),
            Obj::Bool(b) => Some(b as i64),
            _ => None,
        }
    }

    fn global_name(&self, id: Id) -> Option<(&str, &str)> {
        match self.objs[id as usize] {
            Obj::Global(i) => {
                let imp = &self.imports[i];
                Some((imp.module.as_str(), imp.name.as_str()))
            }
            _ => None,
        }
    }

    fn import(&mut self, module: &str, name: &str, pos: usize, opcode: &'static str) -> Step {
        if self.imports.len() >= self.limits.max_imports {
            return Err(over_limit(format!(
                "more than {} imports",
                self.limits.max_imports
            )));
        }
        self.push(Obj::Global(self.imports.len()))?;
        self.imports
            .push(Import::resolved(module, name, pos, opcode, self.proto));
        Ok(())
    }

    /// Records that the import behind value `id` (if it is one) is used as `how`.
    fn mark_used(&mut self, id: Id, how: &'static str) {
        if let Obj::Global(i) = self.objs[id as usize] {
            self.imports[i].used.get_or_insert(how);
        }
    }

    /// Marks every import reachable inside value `id` (a call's arguments, a BUILD state) as `how`.
    fn mark_inside(&mut self, id: Id, how: &'static str) {
        let mut todo = vec![id];
        let mut seen = 0;
        while let Some(i) = todo.pop() {
            seen += 1;
            if seen > MAX_ARG_VISITS {
                break;
            }
            match &self.objs[i as usize] {
                Obj::Global(g) => {
                    let g = *g;
                    self.imports[g].used.get_or_insert(how);
                }
                Obj::Tuple(v) | Obj::List(v) => todo.extend(v.iter().copied()),
                Obj::Dict(pairs) => todo.extend(pairs.iter().flat_map(|&(k, v)| [k, v])),
                _ => {}
            }
        }
    }

    fn tuple_items(&self, id: Id) -> Option<&[Id]> {
        match &self.objs[id as usize] {
            Obj::Tuple(v) | Obj::List(v) => Some(v),
            _ => None,
        }
    }

    fn u64s(&self, id: Id) -> Option<Vec<u64>> {
        self.tuple_items(id)?
            .iter()
            .map(|&i| self.int_of(i).and_then(|v| u64::try_from(v).ok()))
            .collect()
    }

    /// What calling `callable(*args)` gives, for the few callables a checkpoint uses; `how` is the
    /// opcode that calls it.
    fn call(
        &mut self,
        callable: Id,
        args: Id,
        depth: u8,
        how: &'static str,
    ) -> Result<Id, StepError> {
        self.mark_used(callable, how);
        self.mark_inside(args, "argument of a call");
        let Some((module, name)) = self.global_name(callable) else {
            return self.alloc(Obj::Instance);
        };
        let args_v: Vec<Id> = self
            .tuple_items(args)
            .map(|a| a.to_vec())
            .unwrap_or_default();
        let made = match (module, name) {
            ("collections", "OrderedDict") | ("builtins", "dict") => Some(Obj::Dict(Vec::new())),
            ("builtins", "set") => Some(Obj::Set),
            ("_codecs", "encode") => Some(Obj::Bytes(0, None)),
            ("numpy.core.multiarray", "_reconstruct")
            | ("numpy._core.multiarray", "_reconstruct") => Some(Obj::Array(Box::default())),
            ("numpy", "dtype") => args_v
                .first()
                .and_then(|&a| self.str_of(a))
                .map(|t| Obj::NpDtype(t.to_string())),
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state")
            | ("torch.nn.parameter", "Parameter") => {
                return Ok(match args_v.first() {
                    Some(&t) => t,
                    None => self.alloc(Obj::Instance)?,
                });
            }
            ("torch._tensor", "_rebuild_from_type_v2") if depth < 4 && args_v.len() >= 3 => {
                return self.call(args_v[0], args_v[2], depth + 1, how);
            }
            ("torch._utils", "_rebuild_tensor")
            | ("torch._utils", "_rebuild_tensor_v2")
            | ("torch._utils", "_rebuild_tensor_v3") => self.rebuild_tensor(name, &args_v),
            _ => None,
        };
        self.alloc(made.unwrap_or(Obj::Instance))
    }

    fn rebuild_tensor(&self, name: &str, args: &[Id]) -> Option<Obj<'a>> {
        if args.len() < 4 {
            return None;
        }
        let Obj::Storage(storage) = &self.objs[args[0] as usize] else {
            return None;
        };
        let offset = u64::try_from(self.int_of(args[1])?).ok()?;
        let shape = self.u64s(args[2])?;
        let stride = self.u64s(args[3])?;
        if shape.len() != stride.len() {
            return None;
        }
        let mut dtype = storage.dtype;
        if name == "_rebuild_tensor_v3" {
            if let Some((m, n)) = args.get(6).and_then(|&d| self.global_name(d)) {
                dtype = if m == "torch" {
                    dtype_of_torch_name(n)
                } else {
                    None
                };
            }
        }
        Some(Obj::Tensor(Box::new(TensorRef {
            storage: (**storage).clone(),
            dtype,
            offset,
            shape,
            stride,
        })))
    }

    /// `('storage', torch.XStorage, key, location, numel[, view_metadata])` becomes a storage.
    fn persistent(&mut self, pid: Id) -> Result<Id, StepError> {
        self.mark_inside(pid, "persistent id (passed to persistent_load)");
        let items = self
            .tuple_items(pid)
            .map(|a| a.to_vec())
            .unwrap_or_default();
        let is_storage = items.len() >= 5 && self.str_of(items[0]) == Some("storage");
        if !is_storage {
            let key = match &self.objs[pid as usize] {
                Obj::Str(s) => Obj::PersKey(s.to_string()),
                Obj::Int(v) => Obj::PersKey(v.to_string()),
                _ => Obj::Opaque,
            };
            return self.alloc(key);
        }
        let class = match self.global_name(items[1]) {
            Some((m, n)) => format!("{m}.{n}"),
            None => return self.alloc(Obj::Opaque),
        };
        let key = match &self.objs[items[2] as usize] {
            Obj::Str(s) => s.to_string(),
            Obj::Int(v) => v.to_string(),
            _ => return self.alloc(Obj::Opaque),
        };
        let numel = self.int_of(items[4]).and_then(|v| u64::try_from(v).ok());
        let view_offset = items
            .get(5)
            .and_then(|&v| self.tuple_items(v))
            .and_then(|t| t.get(1).copied())
            .and_then(|o| self.int_of(o))
            .and_then(|o| u64::try_from(o).ok())
            .unwrap_or(0);
        let dtype = class.rsplit('.').next().and_then(dtype_of_storage);
        let Some(numel) = numel else {
            return self.alloc(Obj::Opaque);
        };
        self.alloc(Obj::Storage(Box::new(StorageRef {
            dtype,
            class,
            key,
            numel,
            view_offset,
        })))
    }

    /// Fills a numpy array or dtype from its BUILD state (anything else is left as it is).
    fn build_numpy(&mut self, target: Id, state: Id) {
        let Some(items) = self.tuple_items(state).map(|v| v.to_vec()) else {
            return;
        };
        match &self.objs[target as usize] {
            Obj::NpDtype(t) if items.len() >= 2 => {
                if let Some(order) = self.str_of(items[1]) {
                    let descr = format!("{}{}", order, t.trim_start_matches(['<', '>', '|', '=']));
                    self.objs[target as usize] = Obj::NpDtype(descr);
                }
            }
            Obj::Array(_) if items.len() >= 5 => {
                let shape = self.u64s(items[1]).unwrap_or_default();
                let descr = match &self.objs[items[2] as usize] {
                    Obj::NpDtype(d) => Some(d.clone()),
                    _ => None,
                };
                let fortran = self.int_of(items[3]) == Some(1);
                let data = match self.objs[items[4] as usize] {
                    Obj::Bytes(len, Some(at)) => Some((at, len)),
                    _ => None,
                };
                self.objs[target as usize] = Obj::Array(Box::new(ArrayRef {
                    descr,
                    shape,
                    fortran,
                    data,
                }));
            }
            _ => {}
        }
    }

    fn step(&mut self, op: &Op<'a>, pos: usize, next: usize) -> Result<Option<Id>, StepError> {
        match op {
            Op::Mark => {
                if self.marks.len() >= self.limits.max_stack {
                    return Err(over_limit("too many MARKs"));
                }
                self.marks.push(self.stack.len());
            }
            Op::Stop => return self.pop().map(Some),
            Op::Pop => {
                if self.stack.len() > self.floor() {
                    self.stack.pop();
                } else {
                    self.pop_mark()?;
                }
            }
            Op::PopMark => {
                self.pop_mark()?;
            }
            Op::Dup => {
                let t = self.top()?;
                self.push_id(t)?;
            }
            Op::Int(v) => self.push(Obj::Int(*v))?,
            Op::BigInt => self.push(Obj::BigInt)?,
            Op::Bool(b) => self.push(Obj::Bool(*b))?,
            Op::Float(f) => self.push(Obj::Float(*f))?,
            Op::None => self.push(Obj::None)?,
            Op::PersId(k) => self.push(Obj::PersKey(k.to_string()))?,
            Op::BinPersId => {
                let pid = self.pop()?;
                let s = self.persistent(pid)?;
                self.push_id(s)?;
            }
            Op::Reduce | Op::NewObj => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let how = if *op == Op::Reduce {
                    "REDUCE"
                } else {
                    "NEWOBJ"
                };
                let r = self.call(callable, args, 0, how)?;
                self.push_id(r)?;
            }
            Op::NewObjEx => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let callable = self.pop()?;
                self.mark_inside(kwargs, "argument of a call");
                let r = self.call(callable, args, 0, "NEWOBJ_EX")?;
                self.push_id(r)?;
            }
            Op::Str(s) => {
                if let Cow::Owned(o) = s {
                    self.text += o.len();
                    if self.text > self.limits.max_text {
                        return Err(over_limit(format!(
                            "more than {} bytes of escaped text",
                            self.limits.max_text
                        )));
                    }
                }
                self.push(Obj::Str(s.clone()))?
            }
            // The payload is the opcode's last n bytes.
            Op::Bytes(n) => self.push(Obj::Bytes(*n, next.checked_sub(*n as usize)))?,
            Op::Append => {
                let v = self.pop()?;
                let l = self.top()?;
                self.grow(1)?;
                if let Obj::List(items) = &mut self.objs[l as usize] {
                    items.push(v);
                }
            }
            Op::Appends => {
                let items = self.pop_mark()?;
                let l = self.top()?;
                self.grow(items.len())?;
                if let Obj::List(v) = &mut self.objs[l as usize] {
                    v.extend(items);
                }
            }
            Op::Build => {
                let state = self.pop()?;
                let target = self.top()?;
                self.build_numpy(target, state);
                self.mark_inside(state, "BUILD state");
                if let Obj::Global(i) = self.objs[target as usize] {
                    // Setting attributes on an imported module or class rewrites what later imports resolve to.
                    let (module, name) =
                        (self.imports[i].module.clone(), self.imports[i].name.clone());
                    self.mark_used(target, "BUILD");
                    let mut imp = Import::unresolved(
                        module,
                        name,
                        pos,
                        "BUILD",
                        "BUILD sets attributes on an imported module or class",
                    );
                    imp.used = Some("BUILD");
                    self.imports.push(imp);
                }
            }
            Op::Global(m, n) => self.import(m, n, pos, "GLOBAL")?,
            Op::Inst(m, n) => {
                self.import(m, n, pos, "INST")?;
                let class = self.pop()?;
                let args = self.pop_mark()?;
                self.grow(args.len())?;
                let t = self.alloc(Obj::Tuple(args))?;
                let r = self.call(class, t, 0, "INST")?;
                self.push_id(r)?;
            }
            Op::Obj => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return Err("OBJ without a class".into());
                }
                let class = items.remove(0);
                self.grow(items.len())?;
                let t = self.alloc(Obj::Tuple(items))?;
                let r = self.call(class, t, 0, "OBJ")?;
                self.push_id(r)?;
            }
            Op::Dict => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err("DICT with an odd number of items".into());
                }
                self.grow(items.len())?;
                let pairs = items.chunks(2).map(|p| (p[0], p[1])).collect();
                self.push(Obj::Dict(pairs))?;
            }
            Op::EmptyDict => self.push(Obj::Dict(Vec::new()))?,
            Op::SetItem => {
                let v = self.pop()?;
                let k = self.pop()?;
                let d = self.top()?;
                self.grow(1)?;
                if let Obj::Dict(pairs) = &mut self.objs[d as usize] {
                    pairs.push((k, v));
                }
            }
            Op::SetItems => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                let d = self.top()?;
                self.grow(items.len() / 2)?;
                if let Obj::Dict(pairs) = &mut self.objs[d as usize] {
                    pairs.extend(items.chunks(2).map(|p| (p[0], p[1])));
                }
            }
            Op::Get(i) => {
                let i = *i;
                let id = self
                    .memo
                    .get(i)
                    .ok_or_else(|| format!("memo key {i} missing"))?;
                self.push_id(id)?;
            }
            Op::Put(i) => {
                let t = self.top()?;
                self.memo.put(*i, t, self.limits.max_objects)?;
            }
            Op::Memoize => {
                let t = self.top()?;
                let i = self.memo.len as u64;
                self.memo.put(i, t, self.limits.max_objects)?;
            }
            Op::List => {
                let items = self.pop_mark()?;
                self.grow(items.len())?;
                self.push(Obj::List(items))?;
            }
            Op::EmptyList => self.push(Obj::List(Vec::new()))?,
            Op::Tuple | Op::FrozenSet => {
                let items = self.pop_mark()?;
                self.grow(items.len())?;
                self.push(Obj::Tuple(items))?;
            }
            Op::EmptyTuple => self.push(Obj::Tuple(Vec::new()))?,
            Op::Tuple1 | Op::Tuple2 | Op::Tuple3 => {
                let n = match op {
                    Op::Tuple1 => 1,
                    Op::Tuple2 => 2,
                    _ => 3,
                };
                let mut items = vec![0; n];
                for slot in items.iter_mut().rev() {
                    *slot = self.pop()?;
                }
                self.grow(n)?;
                self.push(Obj::Tuple(items))?;
            }
            Op::EmptySet => self.push(Obj::Set)?,
            Op::AddItems => {
                self.pop_mark()?;
                self.top()?;
            }
            Op::StackGlobal => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (self.str_of(module), self.str_of(name)) {
                    (Some(m), Some(n)) => {
                        let (m, n) = (m.to_string(), n.to_string());
                        self.import(&m, &n, pos, "STACK_GLOBAL")?;
                    }
                    _ => {
                        let imp = Import::unresolved(
                            describe(&self.objs[module as usize]),
                            describe(&self.objs[name as usize]),
                            pos,
                            "STACK_GLOBAL",
                            "operands are not two strings",
                        );
                        self.push(Obj::Global(self.imports.len()))?;
                        self.imports.push(imp);
                    }
                }
            }
            Op::Ext(code) => {
                self.push(Obj::Global(self.imports.len()))?;
                self.imports.push(ext_import(*code, pos));
            }
            Op::Proto(p) => self.proto = *p,
            Op::Frame(_) | Op::ReadonlyBuffer => {}
            Op::NextBuffer => self.push(Obj::Opaque)?,
        }
        Ok(None)
    }
}

fn ext_import(code: i64, pos: usize) -> Import {
    Import::unresolved(
        "copyreg extension registry".into(),
        format!("code {code}"),
        pos,
        "EXT",
        "the extension registry can name any global",
    )
}

fn describe(o: &Obj) -> String {
    match o {
        Obj::Str(s) => s.to_string(),
        Obj::Int(v) => format!("<int {v}>"),
        Obj::None => "<None>".into(),
        Obj::Global(_) => "<global>".into(),
        _ => "<non-string value>".into(),
    }
}

/// The dtype of a torch storage class name (`HalfStorage` -> F16).
pub fn dtype_of_storage(class: &str) -> Option<Dtype> {
    Some(match class {
        "FloatStorage" => Dtype::F32,
        "DoubleStorage" => Dtype::F64,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "LongStorage" => Dtype::I64,
        "IntStorage" => Dtype::I32,
        "ShortStorage" => Dtype::I16,
        "CharStorage" => Dtype::I8,
        "ByteStorage" | "UntypedStorage" => Dtype::U8,
        "BoolStorage" => Dtype::BOOL,
        "ComplexFloatStorage" => Dtype::C64,
        "Float8_e4m3fnStorage" => Dtype::F8_E4M3,
        "Float8_e5m2Storage" => Dtype::F8_E5M2,
        "Float8_e4m3fnuzStorage" => Dtype::F8_E4M3FNUZ,
        "Float8_e5m2fnuzStorage" => Dtype::F8_E5M2FNUZ,
        "Float8_e8m0fnuStorage" => Dtype::F8_E8M0,
        "UInt16Storage" => Dtype::U16,
        "UInt32Storage" => Dtype::U32,
        "UInt64Storage" => Dtype::U64,
        _ => return None,
    })
}

/// The dtype of a `torch.<dtype>` constant (`float16` -> F16).
pub fn dtype_of_torch_name(name: &str) -> Option<Dtype> {
    Some(match name {
        "float32" | "float" => Dtype::F32,
        "float64" | "double" => Dtype::F64,
        "float16" | "half" => Dtype::F16,
        "bfloat16" => Dtype::BF16,
        "int64" | "long" => Dtype::I64,
        "int32" | "int" => Dtype::I32,
        "int16" | "short" => Dtype::I16,
        "int8" => Dtype::I8,
        "uint8" => Dtype::U8,
        "bool" => Dtype::BOOL,
        "complex64" | "cfloat" => Dtype::C64,
        "float8_e4m3fn" => Dtype::F8_E4M3,
        "float8_e5m2" => Dtype::F8_E5M2,
        "float8_e4m3fnuz" => Dtype::F8_E4M3FNUZ,
        "float8_e5m2fnuz" => Dtype::F8_E5M2FNUZ,
        "float8_e8m0fnu" => Dtype::F8_E8M0,
        "uint16" => Dtype::U16,
        "uint32" => Dtype::U32,
        "uint64" => Dtype::U64,
        _ => return None,
    })
}

/// Most values one call's arguments (or a BUILD state) are searched for imports they pass on.
const MAX_ARG_VISITS: usize = 4096;

/// Runs the pickle starting at `start` in `data` up to its STOP, never executing anything.
pub fn run(data: &[u8], start: usize, limits: Limits) -> Run<'_> {
    let mut m = Machine {
        objs: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Memo::default(),
        interned: Vec::new(),
        imports: Vec::new(),
        entries: 0,
        text: 0,
        limits,
        proto: 0,
    };
    let mut pos = start;
    let mut lexical: Option<Shadow> = None;
    let mut error: Option<(usize, String)> = None;
    let mut limited = None;
    let mut root = None;
    let mut complete = false;
    let mut ops = 0usize;
    let mut stopped_at = None;
    let mut truncated = false;
    loop {
        let (op, next) = match decode(data, pos) {
            Ok(x) => x,
            Err(e) => {
                if error.is_none() {
                    error = Some((pos, e.to_string()));
                    truncated = e == DecodeError::Truncated;
                }
                if e == DecodeError::Truncated || !limits.resync {
                    stopped_at = Some(pos);
                    if e == DecodeError::Truncated {
                        pos = data.len();
                    }
                    break;
                }
                // CPython stops here, but a scanner that stops can be blinded by any operand it
                // parses differently: go on lexically after the opcode that cannot be decoded.
                lexical.get_or_insert_with(|| m.go_lexical()).garbled = true;
                pos = resync_point(data, pos);
                continue;
            }
        };
        ops += 1;
        let is_stop = op == Op::Stop;
        match &mut lexical {
            Some(sh) => lexical_step(sh, &op, pos, &mut m, true),
            None => {
                let before = m.imports.len();
                match m.step(&op, pos, next) {
                    Ok(Some(r)) => root = Some(r),
                    Ok(None) => {}
                    Err(why) => {
                        match why {
                            StepError::Limit(l) => limited = Some(format!("{l} (at byte {pos})")),
                            StepError::Invalid(why) => error = Some((pos, why)),
                        }
                        // The failed opcode is replayed lexically (its memo slot, its string), unless
                        // the machine already recorded its import.
                        let mut sh = m.go_lexical();
                        let record = m.imports.len() == before;
                        lexical_step(&mut sh, &op, pos, &mut m, record);
                        lexical = Some(sh);
                    }
                }
            }
        }
        if let Op::Proto(p) = op {
            m.proto = p;
        }
        pos = next;
        // Past an undecodable opcode a STOP byte ends nothing: the rest of the data is read to its end.
        if is_stop && !lexical.as_ref().is_some_and(|sh| sh.garbled) {
            complete = true;
            break;
        }
    }
    if lexical.is_some() {
        root = None;
    }
    Run {
        objs: m.objs,
        root,
        imports: m.imports,
        end: pos,
        complete,
        error,
        limited,
        ops,
        stopped_at: stopped_at.unwrap_or(pos),
        truncated,
        proto: m.proto,
    }
}

impl Machine<'_> {
    /// Stops following values: every import so far may now be used unseen; the memo keeps its keys
    /// (so MEMOIZE numbers slots as CPython does) but no value.
    fn go_lexical(&mut self) -> Shadow {
        for imp in &mut self.imports {
            imp.used.get_or_insert(UNTRACKED);
        }
        self.objs = Vec::new();
        self.stack = Vec::new();
        self.marks = Vec::new();
        Shadow::new(std::mem::take(&mut self.memo), true)
    }
}

/// One opcode in lexical mode: imports are recorded (when `record`), operands tracked by the shadow.
fn lexical_step(sh: &mut Shadow, op: &Op, pos: usize, m: &mut Machine, record: bool) {
    let operands = sh.see(op);
    if !record {
        return;
    }
    let proto = match op {
        Op::Proto(p) => *p,
        _ => m.proto,
    };
    let imp = match op {
        Op::Global(mo, n) => Some(Import::resolved(mo, n, pos, "GLOBAL", proto)),
        Op::Inst(mo, n) => Some(Import::resolved(mo, n, pos, "INST", proto)),
        Op::StackGlobal => Some(match operands {
            Some((mo, n)) => Import::resolved(&mo, &n, pos, "STACK_GLOBAL", proto),
            None => Import::unresolved(
                "<unknown>".into(),
                "<unknown>".into(),
                pos,
                "STACK_GLOBAL",
                "operands not tracked after an earlier problem",
            ),
        }),
        Op::Ext(code) => Some(ext_import(*code, pos)),
        _ => None,
    };
    // Past an undecodable opcode the bytes may be anything (CPython stops there): only imports of
    // names the import system can resolve are kept, so random data does not read as code.
    let imp = imp.filter(|i| !sh.garbled || importable(i));
    if let Some(mut imp) = imp {
        imp.used = Some(UNTRACKED);
        keep_import(&mut m.imports, imp, m.limits.max_imports);
    }
}

/// Lexical mode's view of operands, as picklescan resolves STACK_GLOBAL: the strings the last two
/// opcodes pushed, and the short strings it memoized itself (bounded). Memo keys are counted as CPython
/// counts them (MEMOIZE stores at `len(memo)`), including the keys set before lexical mode began, so a
/// slot is never confused with another; anything unsure resolves to nothing.
struct Shadow {
    last: [Option<String>; 2],
    /// Every memo key set (values unused): what MEMOIZE numbers the next slot with.
    keys: Memo,
    /// True past an opcode that could not be decoded: what follows may be no pickle at all.
    garbled: bool,
    /// False once more keys were set than [`SHADOW_KEYS`] (or before the stream's start was seen).
    len_known: bool,
    values: HashMap<u64, String>,
}

/// Longest string, most entries the lexical memo keeps, and most memo keys it counts.
const SHADOW_STR: usize = 256;
const SHADOW_MEMO: usize = 100_000;
const SHADOW_KEYS: usize = 4_000_000;

impl Shadow {
    fn new(keys: Memo, len_known: bool) -> Shadow {
        Shadow {
            last: [None, None],
            keys,
            garbled: false,
            len_known,
            values: HashMap::new(),
        }
    }

    fn push(&mut self, v: Option<String>) {
        self.last[0] = self.last[1].take();
        self.last[1] = v;
    }

    fn remember(&mut self, i: u64) {
        if self.keys.put(i, 0, SHADOW_KEYS).is_err() {
            self.len_known = false;
        }
        match &self.last[1] {
            Some(top) if self.values.len() < SHADOW_MEMO => {
                self.values.insert(i, top.clone());
            }
            _ => {
                self.values.remove(&i);
            }
        }
    }

    /// Updates the view for one opcode; for STACK_GLOBAL returns its (module, name) when both are known.
    fn see(&mut self, op: &Op) -> Option<(String, String)> {
        match op {
            Op::Str(v) => self.push((v.len() <= SHADOW_STR).then(|| v.to_string())),
            Op::Get(i) => self.push(self.values.get(i).cloned()),
            Op::Put(i) => self.remember(*i),
            Op::Memoize if self.len_known => self.remember(self.keys.len as u64),
            Op::Memoize => {
                // The slot is `len(memo)`, at least SHADOW_KEYS: any value kept that high may be overwritten.
                self.values.retain(|&k, _| k < SHADOW_KEYS as u64);
            }
            Op::Frame(_) | Op::Proto(_) => {}
            Op::StackGlobal => {
                let m = self.last[0].take();
                let n = self.last[1].take();
                return m.zip(n);
            }
            _ => self.last = [None, None],
        }
        None
    }
}

/// A resolved import of dotted identifiers (what `import` can find on a real system).
fn importable(i: &Import) -> bool {
    let dotted = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|p| {
                p.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
    };
    i.unresolved.is_none() && dotted(&i.module) && dotted(&i.name)
}

/// Records an import in lexical mode: all of them up to the limit, past it only dangerous ones (a few more).
fn keep_import(imports: &mut Vec<Import>, imp: Import, limit: usize) {
    if imports.len() < limit {
        imports.push(imp);
    } else if imports.len() < limit + limit / 10 {
        let dangerous = imp.unresolved.is_some()
            || !matches!(
                super::imports::classify(&imp.module, &imp.name),
                super::imports::Verdict::Allowed
            );
        if dangerous {
            imports.push(imp);
        }
    }
}

/// What [`run_stream`] found in a stream.
pub struct StreamScan {
    pub imports: Vec<Import>,
    /// The first problem: where (stream offset) and why.
    pub error: Option<(usize, String)>,
    /// Stream offset after the last byte read.
    pub end: usize,
}

/// Bytes [`run_stream`] keeps buffered ahead of the opcode it decodes.
const WINDOW: usize = 1 << 20;

/// Scans a pickle stream too large to hold (the rest of a deflated entry past what was inflated in
/// memory) for imports, lexically, in bounded memory: every pickle in it, every opcode, operands of any
/// size skipped in place. `origin` is the stream offset of the first byte read; `proto` the protocol in
/// force there. The memo's state before `origin` is unknown, so slots filled earlier never resolve.
pub fn run_stream(src: &mut dyn Read, origin: usize, proto: u8, limits: Limits) -> StreamScan {
    let mut imports = Vec::new();
    let mut error = None;
    let mut buf: Vec<u8> = Vec::with_capacity(2 * WINDOW);
    let mut base = origin;
    let mut p = 0usize;
    let mut eof = false;
    let mut sh = Shadow::new(Memo::default(), false);
    let mut proto = proto;
    let fail = |error: &mut Option<(usize, String)>, at: usize, why: String| {
        if error.is_none() {
            *error = Some((at, why));
        }
    };
    loop {
        if !eof && buf.len() - p < WINDOW {
            buf.drain(..p);
            base += p;
            p = 0;
            eof = fill(src, &mut buf, 2 * WINDOW);
        }
        if p >= buf.len() {
            break;
        }
        match decode(&buf, p) {
            Ok((op, next)) => {
                let operands = sh.see(&op);
                let at = base + p;
                let imp = match &op {
                    Op::Proto(v) => {
                        proto = *v;
                        None
                    }
                    Op::Global(mo, n) => Some(Import::resolved(mo, n, at, "GLOBAL", proto)),
                    Op::Inst(mo, n) => Some(Import::resolved(mo, n, at, "INST", proto)),
                    Op::StackGlobal => Some(match operands {
                        Some((mo, n)) => Import::resolved(&mo, &n, at, "STACK_GLOBAL", proto),
                        None => Import::unresolved(
                            "<unknown>".into(),
                            "<unknown>".into(),
                            at,
                            "STACK_GLOBAL",
                            "operands not tracked in a streamed pickle",
                        ),
                    }),
                    Op::Ext(code) => Some(ext_import(*code, at)),
                    _ => None,
                };
                if let Some(mut imp) = imp.filter(|i| !sh.garbled || importable(i)) {
                    imp.used = Some(UNTRACKED);
                    keep_import(&mut imports, imp, limits.max_imports);
                }
                if op == Op::Stop {
                    // The next pickle starts with an empty memo.
                    let garbled = sh.garbled;
                    sh = Shadow::new(Memo::default(), true);
                    sh.garbled = garbled;
                }
                p = next;
            }
            Err(DecodeError::Truncated) if eof => {
                fail(&mut error, base + p, DecodeError::Truncated.to_string());
                break;
            }
            Err(DecodeError::Truncated) => {
                // An opcode larger than the window: skip its operand without holding it.
                let at = base + p;
                sh.see(&Op::Bytes(0));
                let skipped = match extent(&buf[p..]) {
                    Some(Extent::Bytes(total)) => {
                        let have = (buf.len() - p) as u64;
                        base += buf.len();
                        buf.clear();
                        p = 0;
                        let rest = total - have;
                        let got =
                            std::io::copy(&mut src.take(rest), &mut std::io::sink()).unwrap_or(0);
                        base += got as usize;
                        got == rest
                    }
                    Some(Extent::Lines(n)) => {
                        if buf[p] == b'c' || buf[p] == b'i' {
                            let mut imp = Import::unresolved(
                                "<operand too long>".into(),
                                "<operand too long>".into(),
                                at,
                                if buf[p] == b'c' { "GLOBAL" } else { "INST" },
                                "a GLOBAL operand longer than the scan window",
                            );
                            imp.used = Some(UNTRACKED);
                            keep_import(&mut imports, imp, limits.max_imports);
                        }
                        let (ok, skipped, rest) = skip_lines(src, &buf[p..], n);
                        base += p + skipped;
                        buf = rest;
                        p = 0;
                        ok
                    }
                    None => false,
                };
                if !skipped {
                    fail(&mut error, at, DecodeError::Truncated.to_string());
                    break;
                }
            }
            Err(e) => {
                fail(&mut error, base + p, e.to_string());
                sh.garbled = true;
                p = resync_point(&buf, p);
            }
        }
    }
    StreamScan {
        imports,
        error,
        end: base + p,
    }
}

/// Reads from `src` until `buf` holds `want` bytes; true at the end of the stream.
fn fill(src: &mut dyn Read, buf: &mut Vec<u8>, want: usize) -> bool {
    let mut chunk = vec![0u8; 64 << 10];
    while buf.len() < want {
        match src.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}

/// Skips `n` text lines that start in `head` and go on in `src`. Returns whether they ended, the bytes
/// skipped (from the start of `head`) and the bytes read past them (the next opcodes).
fn skip_lines(src: &mut dyn Read, head: &[u8], n: u8) -> (bool, usize, Vec<u8>) {
    let mut left = n as usize;
    let mut consumed = 0;
    let mut chunk = head.to_vec();
    loop {
        if let Some(i) = chunk.iter().position(|&b| {
            if b == b'\n' {
                left -= 1;
            }
            left == 0
        }) {
            return (true, consumed + i + 1, chunk[i + 1..].to_vec());
        }
        consumed += chunk.len();
        chunk.resize(64 << 10, 0);
        let got = loop {
            match src.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(g) => break g,
                Err(_) => break 0,
            }
        };
        if got == 0 {
            return (false, consumed, Vec::new());
        }
        chunk.truncate(got);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run0(d: &[u8]) -> Run<'_> {
        run(d, 0, Limits::default())
    }

    #[test]
    fn resolves_stack_global_through_memo() {
        // protocol 4: 'os' memoized, popped, fetched back with BINGET.
        let p = b"\x80\x04\x8c\x02os\x94\x30\x8c\x06system\x94\x30h\x00h\x01\x93\x94N\x85R.";
        let r = run0(p);
        assert!(r.complete, "{:?}", r.error);
        assert_eq!(r.imports.len(), 1);
        assert_eq!(
            (r.imports[0].module.as_str(), r.imports[0].name.as_str()),
            ("os", "system")
        );
        assert_eq!(r.imports[0].unresolved, None);
    }

    #[test]
    fn unresolvable_stack_global_is_flagged() {
        let p = b"\x80\x04K*\x8c\x02os\x93.";
        let r = run0(p);
        assert_eq!(r.imports.len(), 1);
        assert!(r.imports[0].unresolved.is_some());
    }

    #[test]
    fn build_on_an_import_is_flagged() {
        // torch._utils imported, then its attributes overwritten with BUILD.
        let p = b"\x80\x02ctorch\n_utils\n}X\x01\x00\x00\x00aX\x01\x00\x00\x00bsb.";
        let r = run0(p);
        assert!(r.complete, "{:?}", r.error);
        assert_eq!(r.imports.len(), 2);
        assert_eq!(r.imports[1].opcode, "BUILD");
        assert!(r.imports[1].unresolved.is_some());
    }

    #[test]
    fn builds_containers() {
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00b]q\x01(K\x02K\x03eu.";
        let r = run0(p);
        let Obj::Dict(pairs) = r.get(r.root.unwrap()) else {
            panic!()
        };
        assert_eq!(pairs.len(), 2);
        let Obj::List(l) = r.get(pairs[1].1) else {
            panic!()
        };
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn underflow_switches_to_lexical_and_keeps_scanning() {
        let p = b"\x80\x02Rcos\nsystem\n\x8c\x01a\x8c\x01b\x93K\x01\x8c\x01b\x93.";
        let r = run0(p);
        assert!(r.error.is_some());
        assert_eq!(r.imports.len(), 3);
        assert_eq!(r.imports[0].name, "system");
        assert_eq!(
            (
                r.imports[1].module.as_str(),
                r.imports[1].unresolved.is_none()
            ),
            ("a", true)
        );
        assert!(r.imports[2].unresolved.is_some());
        assert!(r.root.is_none());
    }

    #[test]
    fn limits_bound_memory() {
        let mut p = b"\x80\x02".to_vec();
        p.extend_from_slice(&[b'N'; 5000]);
        p.extend_from_slice(b"cos\nsystem\n.");
        let lim = Limits {
            max_objects: 100,
            max_stack: 100,
            max_entries: 100,
            max_text: 100,
            max_imports: 100,
            resync: true,
        };
        let r = run(&p, 0, lim);
        assert!(r.error.is_none() && r.limited.unwrap().contains("100"));
        assert_eq!(r.imports.len(), 1);
    }

    #[test]
    fn memo_dense_and_sparse() {
        let mut m = Memo::default();
        for i in (0..100_000u64).step_by(1000) {
            m.put(i, i as Id, 1_000_000).unwrap();
        }
        assert!(m.dense.len() < 5000);
        assert_eq!(m.get(99_000), Some(99_000));
        assert_eq!(m.get(500), None);
        assert_eq!(m.len, 100);
        let mut small = Memo::default();
        for i in 0..10 {
            small.put(i, 7, 5).map_err(|_| i).ok();
        }
        assert_eq!(small.len, 5);
    }

    #[test]
    fn lexical_mode_resolves_memoized_stack_global_operands() {
        // An underflow first (lexical mode from there), then protocol 4 names through MEMOIZE / BINGET.
        let p = b"\x80\x04R\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94h\x00h\x01\x93N.";
        let r = run0(p);
        assert!(r.error.is_some());
        assert_eq!(r.imports.len(), 2);
        for imp in &r.imports {
            assert_eq!(
                (imp.module.as_str(), imp.name.as_str(), &imp.unresolved),
                ("collections", "OrderedDict", &None)
            );
        }
    }

    #[test]
    fn import_flood_keeps_dangerous_ones() {
        let lim = Limits {
            max_imports: 50,
            ..Limits::default()
        };
        // A flood of allowed imports past the limit hides neither a dangerous nor an unknown one.
        let mut p = b"\x80\x02".to_vec();
        for _ in 0..200 {
            p.extend_from_slice(b"ccollections\nOrderedDict\n0");
        }
        p.extend_from_slice(b"cos\nsystem\n0cevil\nf\n)R.");
        let r = run(&p, 0, lim);
        assert!(r.limited.unwrap().contains("imports"));
        assert_eq!(r.imports.len(), 52);
        assert_eq!(r.imports[50].module, "os");
        assert_eq!(
            (r.imports[51].module.as_str(), r.imports[51].used),
            ("evil", Some(UNTRACKED))
        );
        // Before the limit, every import's use was followed; from it on, none is.
        assert_eq!(r.imports[0].used, Some(UNTRACKED));
    }

    #[test]
    fn uses_are_tracked() {
        // collections.OrderedDict called; evil.f only stored in a dict; evil.g passed as an argument;
        // evil.h built on with BUILD; evil.k called through INST.
        let p = b"\x80\x02ccollections\nOrderedDict\n)R}X\x01\x00\x00\x00acevil\nf\nsccollections\nOrderedDict\ncevil\ng\n\x85Rcevil\nh\n}b(ievil\nk\n0000.";
        let r = run0(p);
        assert!(r.error.is_none(), "{:?}", r.error);
        let used: Vec<_> = r
            .imports
            .iter()
            .map(|i| (i.name.as_str(), i.opcode, i.used))
            .collect();
        assert_eq!(
            used,
            [
                ("OrderedDict", "GLOBAL", Some("REDUCE")),
                ("f", "GLOBAL", None),
                ("OrderedDict", "GLOBAL", Some("REDUCE")),
                ("g", "GLOBAL", Some("argument of a call")),
                ("h", "GLOBAL", Some("BUILD")),
                ("h", "BUILD", Some("BUILD")),
                ("k", "INST", Some("INST")),
            ]
        );
    }

    #[test]
    fn compat_names_below_protocol_3_only() {
        let r = run0(b"c__builtin__\neval\n.");
        assert_eq!(
            (
                r.imports[0].module.as_str(),
                r.imports[0].written.as_deref()
            ),
            ("builtins", Some("__builtin__ eval"))
        );
        let r = run0(b"\x80\x04c__builtin__\neval\n.");
        assert_eq!(
            (
                r.imports[0].module.as_str(),
                r.imports[0].written.as_deref()
            ),
            ("__builtin__", None)
        );
    }

    #[test]
    fn memo_numbering_survives_the_object_limit() {
        // 10 values memoized by MEMOIZE, the object limit hit, then 'collections' 'OrderedDict' memoized
        // (slots 11, 12 as CPython numbers them) and `builtins` `eval` in slots 13, 14: fetching 13/14
        // must give eval, never the allowed pair.
        let lim = Limits {
            max_objects: 12,
            ..Limits::default()
        };
        let mut p = b"\x80\x04".to_vec();
        for i in 0..11u8 {
            p.extend_from_slice(&[0x8a, 1, 100 + i, 0x94, b'0']);
        }
        for s in ["collections", "OrderedDict", "builtins", "eval"] {
            p.extend_from_slice(&[0x8c, s.len() as u8]);
            p.extend_from_slice(s.as_bytes());
            p.extend_from_slice(b"\x940");
        }
        p.extend_from_slice(b"h\x0dh\x0e\x93.");
        let r = run(&p, 0, lim);
        assert!(r.limited.is_some());
        let imp = r.imports.last().unwrap();
        assert_eq!(
            (imp.module.as_str(), imp.name.as_str(), &imp.unresolved),
            ("builtins", "eval", &None)
        );
    }

    #[test]
    fn decoding_goes_on_after_a_bad_operand() {
        // An INT that CPython rejects too ('1.5'), then os.system: still seen.
        let r = run0(b"I1.5\ncos\nsystem\n.");
        assert!(r.error.is_some());
        assert_eq!(r.imports.len(), 1);
        assert_eq!(r.imports[0].name, "system");
        assert_eq!(r.imports[0].used, Some(UNTRACKED));
    }

    #[test]
    fn streamed_scan_finds_imports_past_huge_operands() {
        // A 3 MiB BINBYTES8 and a 3 MiB UNICODE line (both larger than the window), then imports.
        let mut p = b"\x80\x04\x8e".to_vec();
        p.extend_from_slice(&(3u64 << 20).to_le_bytes());
        p.extend(std::iter::repeat_n(b'x', 3 << 20));
        p.push(b'V');
        p.extend(std::iter::repeat_n(b'y', 3 << 20));
        p.extend_from_slice(b"\n0\x8c\x02os\x94\x8c\x06system\x94\x93N.cposix\nsystem\n.");
        let s = run_stream(&mut &p[..], 0, 0, Limits::default());
        assert!(s.error.is_none(), "{:?}", s.error);
        let names: Vec<_> = s
            .imports
            .iter()
            .map(|i| (i.module.as_str(), i.name.as_str(), i.pos))
            .collect();
        let sg = p.iter().position(|&b| b == 0x93).unwrap();
        let pg = p.len() - b"cposix\nsystem\n.".len();
        assert_eq!(names, [("os", "system", sg), ("posix", "system", pg)]);
        // Cut inside the huge operand: the error names the opcode's offset.
        let cut = run_stream(&mut &p[..2 << 20], 0, 0, Limits::default());
        assert_eq!(cut.error.unwrap().0, 2);
    }

    #[test]
    fn deep_nesting_is_not_recursive() {
        // 200k nested lists, each appended into the one below it.
        let mut p = b"\x80\x02".to_vec();
        for _ in 0..200_000 {
            p.extend_from_slice(b"]q\x00");
        }
        p.extend_from_slice(&vec![b'a'; 199_999]);
        p.push(b'.');
        let r = run0(&p);
        assert!(r.complete && r.error.is_none(), "{:?}", r.error);
        let run_ref = &r;
        assert!(crate::pickle::tensors::named_tensors(run_ref).is_empty());
    }
}
