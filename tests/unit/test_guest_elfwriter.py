"""The guest tests' ELF writer (support.elf_writer): pyelftools reads back what it writes."""

import io

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from support.elf_writer import EM_386, dynamic_elf, module_elf

def test_module_elf_has_modinfo_section():
    elf = ELFFile(io.BytesIO(module_elf({"name": "demo", "depends": "a,b"})))
    assert elf.get_section_by_name(".modinfo").data() == b"name=demo\0depends=a,b\0"


def test_dynamic_elf_tags_and_interpreter_read_back():
    elf = ELFFile(io.BytesIO(dynamic_elf(["liba.so.1", "libb.so.2"], runpath="$ORIGIN/../lib",
                                         interp="/lib64/ld-test.so.2")))
    dynamic = next(s for s in elf.iter_sections() if isinstance(s, DynamicSection))
    tags = [(t.entry.d_tag, getattr(t, "needed", None) or getattr(t, "runpath", None))
            for t in dynamic.iter_tags() if t.entry.d_tag != "DT_NULL"]
    assert tags == [("DT_NEEDED", "liba.so.1"), ("DT_NEEDED", "libb.so.2"), ("DT_RUNPATH", "$ORIGIN/../lib")]
    interp = [s.get_interp_name() for s in elf.iter_segments() if s.header.p_type == "PT_INTERP"]
    assert interp == ["/lib64/ld-test.so.2"]


def test_32_bit_elf_reads_back():
    elf = ELFFile(io.BytesIO(dynamic_elf(["libc.so.6"], elfclass=32, machine=EM_386)))
    assert elf.elfclass == 32 and elf["e_machine"] == "EM_386"
    dynamic = next(s for s in elf.iter_sections() if isinstance(s, DynamicSection))
    assert [t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"] == ["libc.so.6"]
