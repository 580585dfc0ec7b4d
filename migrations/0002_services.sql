-- The tables easyMO's flows read and write: jobs, property, rides, shop, hand-offs.

create table employers (
    id bigserial primary key,
    name text not null,
    phone text
);

create table job_categories (
    id bigserial primary key,
    name text not null unique
);

create table jobs (
    id bigserial primary key,
    category_id bigint not null references job_categories (id),
    employer_id bigint not null references employers (id),
    title text not null,
    location text,
    salary text,
    description text,
    status text not null default 'open' check (status in ('open', 'filled', 'closed')),
    posted_at timestamptz not null default now()
);

-- Open jobs of a category, newest first (flows/jobs.flow).
create index jobs_open_by_category on jobs (category_id, posted_at desc) where status = 'open';

create table job_applications (
    job_id bigint not null references jobs (id),
    contact_id bigint not null references contacts (id),
    created_at timestamptz not null default now(),
    primary key (job_id, contact_id)
);

create table property_types (
    id bigserial primary key,
    name text not null unique,
    description text,
    sort_order integer not null default 0
);

create table properties (
    id bigserial primary key,
    type_id bigint not null references property_types (id),
    title text not null,
    district text,
    monthly_rent integer,
    available boolean not null default true,
    listed_at timestamptz not null default now()
);

-- Available properties of a type, newest first (flows/property.flow).
create index properties_available_by_type on properties (type_id, listed_at desc) where available;

create table ride_requests (
    id bigserial primary key,
    contact_id bigint not null references contacts (id),
    pickup_latitude double precision not null,
    pickup_longitude double precision not null,
    pickup_name text,
    status text not null default 'requested',
    created_at timestamptz not null default now()
);

create table product_categories (
    id bigserial primary key,
    name text not null unique
);

create table products (
    id bigserial primary key,
    category_id bigint not null references product_categories (id),
    name text not null,
    price integer not null,
    in_stock boolean not null default true
);

-- Products in stock by category, by name (flows/marketplace.flow).
create index products_in_stock_by_category on products (category_id, name) where in_stock;

create table handoffs (
    id bigserial primary key,
    contact_id bigint not null references contacts (id),
    service text not null,
    created_at timestamptz not null default now()
);
