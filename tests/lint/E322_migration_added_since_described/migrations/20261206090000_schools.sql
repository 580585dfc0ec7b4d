-- Schools for the school-fees service.
create table schools (id bigserial primary key, name text not null, term_fee integer);
